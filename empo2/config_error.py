"""`ConfigError`, on its own so that any module can raise it without importing the schema.

Why a leaf: the registries, the sharding rules and the environments refuse bad settings with the
dotted key named, and the schema module imports some of them to check values; a leaf breaks that
loop instead of deferred imports.
"""


class ConfigError(ValueError):
    """A configuration problem; the message names the dotted key (or the file) and what to do."""
