"""How a config field declares its allowed values, and the one rule that checks them.

Why declared on the field: a choice or a range written next to the field (`kind: str =
choice("auto", "hf", "vllm")`) cannot drift away from it the way a table of dotted keys elsewhere
can, and `check_fields` needs no list of keys: it walks every section and applies what each field
declares, naming the dotted key in its error. Rules that read several fields at once are in
`empo2.config_checks`.
"""

from __future__ import annotations

from dataclasses import field, fields, is_dataclass
from typing import Any

from empo2.config_error import ConfigError

RANGES: dict[str, tuple[Any, str]] = {
    "positive": (lambda v: v > 0, "must be > 0"),
    "non_negative": (lambda v: v >= 0, "must be >= 0"),
    "probability": (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    "cosine": (lambda v: -1 <= v <= 1, "a cosine similarity in [-1, 1]"),
    "discount": (lambda v: 0 < v <= 1, "a discount in (0, 1]"),
    "count_or_none": (lambda v: v is None or v >= 1, "must be >= 1 (or null)"),
}


def choice(default: Any, *others: Any) -> Any:
    """A field whose value is `default` or one of `others`."""
    return field(default=default, metadata={"choices": (default, *others)})


def _ranged(kind: str, default: Any) -> Any:
    return field(default=default, metadata={"range": kind})


def positive(default: Any) -> Any:
    return _ranged("positive", default)


def non_negative(default: Any) -> Any:
    return _ranged("non_negative", default)


def probability(default: float) -> Any:
    return _ranged("probability", default)


def cosine(default: float) -> Any:
    return _ranged("cosine", default)


def discount(default: float) -> Any:
    return _ranged("discount", default)


def count_or_none(default: int | None) -> Any:
    """None, or a count of at least 1."""
    return _ranged("count_or_none", default)


def check_fields(obj: Any, prefix: str = "") -> None:
    """The one rule for declared choices and ranges, over every field of every section."""
    for f in fields(obj):
        key, value = f"{prefix}{f.name}", getattr(obj, f.name)
        if is_dataclass(value):
            check_fields(value, f"{key}.")
        elif "choices" in f.metadata and value not in f.metadata["choices"]:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(str(c) for c in f.metadata['choices'])}")
        elif "range" in f.metadata and not RANGES[f.metadata["range"]][0](value):
            raise ConfigError(f"{key}: {RANGES[f.metadata['range']][1]}, got {value!r}")
