"""The README's config reference, generated from the schema's field docstrings.

Why generated: every field of `empo2.config` carries its docstring right under it, so the schema is
the documentation; `field_docs()` reads those docstrings back with `ast` and a test keeps the
README's table equal to `reference_markdown()`. Regenerate with
`python -m empo2.config_reference --update-readme`.
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


def reference_markdown() -> str:
    """The README's config reference table."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, doc in field_docs():
        default = default.replace("|", "\\|").replace("\n", "\\n")
        lines.append(f"| `{key}` | {'`' + default + '`' if default else ''} | {doc.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


def update_readme(path: str | Path = "README.md") -> None:
    """Replace the README's config reference table (its last section) with the generated one."""
    path = Path(path)
    text = path.read_text()
    start = text.index("| key | default | meaning |")
    path.write_text(text[:start] + reference_markdown() + "\n")


if __name__ == "__main__":  # python -m empo2.config [--update-readme]
    import sys

    if "--update-readme" in sys.argv:
        update_readme()
    else:
        print(reference_markdown())
