"""The repository's shape: no module-level import cycle, no oversized module, no pointer outside it."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("empo2", "callbacks", "datamodules")
MAX_LINES = 500


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def top_level_imports(path: Path, known: set[str], name: str) -> set[str]:
    """Project modules imported when `path` is imported: statements at module level, outside
    `if TYPE_CHECKING:` blocks (imports inside functions run later and cannot form a load cycle)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(stmts):
        for stmt in stmts:
            if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
                continue
            if isinstance(stmt, (ast.If, ast.Try)):
                visit(stmt.body)
                visit(getattr(stmt, "orelse", []))
                for handler in getattr(stmt, "handlers", []):
                    visit(handler.body)
            elif isinstance(stmt, ast.Import):
                found.update(a.name for a in stmt.names)
            elif isinstance(stmt, ast.ImportFrom):
                base = stmt.module or ""
                if stmt.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - stmt.level + 1] + ([base] if base else []))
                subs = {f"{base}.{a.name}" for a in stmt.names} & known
                found.update(subs)  # `from package import submodule` loads that submodule ...
                if len(subs) < len(stmt.names):
                    found.add(base)  # ... any other name comes from the module itself

    visit(ast.parse(path.read_text()).body)
    return {m for m in found if m in known and m != name}


def test_no_module_level_import_cycle():
    mods = modules()
    graph = {name: top_level_imports(path, set(mods), name) for name, path in mods.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])


def test_no_module_over_the_line_budget():
    long = {str(p.relative_to(ROOT)): n for p in modules().values() if (n := len(p.read_text().splitlines())) >= MAX_LINES}
    assert not long, f"modules of {MAX_LINES} lines or more: {long}"


def test_nothing_points_outside_the_repository():
    texts = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *modules().values(), *(ROOT / "conf").rglob("*.yaml")]
    assert not [str(p.relative_to(ROOT)) for p in texts if "../shared" in p.read_text()]
