"""What a config error adds to help: where a YAML file broke, which key was meant, what a section
takes instead of a value.

Why apart from `empo2.config`: these read the schema (a `Config` instance handed in) only to word
an error; the schema module stays the schema.
"""

from __future__ import annotations

import difflib
from dataclasses import fields, is_dataclass
from typing import Any

from empo2.config_error import ConfigError


def section_at(root: Any, dotted: str) -> Any:
    """The dataclass instance at a dotted path of `root` (`model.lora`), or None."""
    node: Any = root
    for part in [p for p in dotted.split(".") if p]:
        node = getattr(node, part, None) if is_dataclass(node) else None
    return node if is_dataclass(node) else None


def did_you_mean(root: Any, full_key: str) -> str:
    """' (did you mean model.lora.r?)' when `full_key` is close to a key its section has; else ''."""
    section, _, leaf = full_key.rpartition(".")
    node = section_at(root, section)
    if node is None:
        return ""
    names = [f.name for f in fields(node)]
    close = difflib.get_close_matches(leaf, names, n=1, cutoff=0.5)
    if not close and len(leaf) > 1:  # abbreviations: r for rank, lr for learning_rate
        close = [n for n in names if leaf.startswith(n) or n.startswith(leaf)][:1]
    return f" (did you mean {section + '.' if section else ''}{close[0]}?)" if close else ""


def check_section_override(root: Any, item: str) -> None:
    """`rollout=fast` would replace a whole section by a string: say which keys it has instead."""
    key, _, value = item.partition("=")
    node = section_at(root, key.strip())
    if node is not None and not value.strip().startswith("{"):
        example = fields(node)[0].name
        raise ConfigError(f"{key}: a section, not a value; set one of its keys, e.g. {key}.{example}=..."
                          f" (python -m empo2.fit --print-config lists them)")


def yaml_error_text(err: Exception) -> str:
    """A YAML parser's complaint in one line: where (line, column, counted from 1) and what."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    text = str(err)
    return text.splitlines()[0] if text else type(err).__name__
