"""docs/CONFIG.md, the config reference, generated from the schema's field docstrings.

Why generated: every field of `empo2.config` carries its docstring right under it, so the schema is
the documentation; `field_docs()` reads those docstrings back with `ast`, and a test keeps
docs/CONFIG.md equal to `reference_page()`. Regenerate with `python -m empo2.config_reference --write`.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import fields, is_dataclass
from pathlib import Path

from empo2.config import Config


def field_docs(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, docstring) for every field, read from the attribute docstrings."""
    source = textwrap.dedent(inspect.getsource(cls))
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    stmts = body.body
    for stmt, nxt in zip(stmts, stmts[1:]):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                docs[stmt.target.id] = " ".join(str(nxt.value.value).split())
    rows: list[tuple[str, str, str]] = []
    default_obj = cls()
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        value = getattr(default_obj, f.name)
        if is_dataclass(value):
            rows.append((key, "", docs.get(f.name, "")))
            rows.extend(field_docs(type(value), prefix=f"{key}."))
        else:
            rows.append((key, repr(value), docs.get(f.name, "")))
    return rows


PAGE = Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"


def reference_markdown() -> str:
    """The reference table: every key, its default and its meaning."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, doc in field_docs():
        default = default.replace("|", "\\|").replace("\n", "\\n")
        lines.append(f"| `{key}` | {'`' + default + '`' if default else ''} | {doc.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


def reference_page() -> str:
    """docs/CONFIG.md as it must read."""
    return (
        "# Config reference\n\n"
        "Every key of the config, its default and what it does, generated from `empo2/config.py` (each field's\n"
        "docstring; `python -m empo2.config_reference --write` regenerates this page, and a test fails when it is\n"
        "stale). Set keys in a YAML file (`--config FILE`, repeatable: later files win) or as `key=value`\n"
        "overrides after it; `--print-config` shows the result without running anything. `trainer.*` is\n"
        "passed to `lightning.Trainer` as it is.\n\n" + reference_markdown() + "\n"
    )


if __name__ == "__main__":  # python -m empo2.config_reference [--write]
    import sys

    if "--write" in sys.argv:
        PAGE.write_text(reference_page())
    else:
        print(reference_page(), end="")
