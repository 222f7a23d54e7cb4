"""The user's pages: a short README whose every command is a valid invocation, links that resolve,
and the detail in docs/ (the config reference's own test is in test_config.py)."""

import importlib
import importlib.util
import re
import shlex
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from empo2.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Keys whose value is a path a command reads: a README example may name one that a run makes first.
PATH_KEYS = ("model.init_from", "model.name_or_path", "ckpt_path", "memory.init_from")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lstrip("#").strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(line) for line in text.splitlines() if line.startswith("#")}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.split("  #")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_is_short_and_the_pages_exist():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
    for name in ("RESULTS", "BENCHMARKS", "CONFIG", "GPU", "ENVIRONMENTS", "EMPO2", "USAGE", "TRAINER", "DEVELOPING"):
        assert (ROOT / "docs" / f"{name}.md").is_file(), name
    assert not (ROOT / "BENCHMARKS.md").exists()  # moved to docs/, not copied


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_links_resolve(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists():
            broken.append(target)
        elif anchor and where.suffix == ".md" and anchor not in anchors(where):
            broken.append(target)
    assert not broken, f"{page.name}: {broken}"


def key_exists(dotted: str) -> bool:
    node: object = Config()
    for part in dotted.split("."):
        if not is_dataclass(node) or part not in {f.name for f in fields(node)}:
            return isinstance(node, dict)  # trainer.*, env.options.*: free-form mappings
        node = getattr(node, part)
    return True


def test_every_readme_command_is_a_valid_invocation():
    commands = readme_commands()
    tools = [c for c in commands if c.startswith("python -m empo2.")]
    makes = [c for c in commands if c.startswith("make ")]
    assert len(tools) >= 10 and makes and len(tools) + len(makes) == len(commands), commands
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    for command in makes:
        words = shlex.split(command)
        assert all(w in targets for w in words[1:] if "=" not in w), command
    for command in tools:
        words = shlex.split(command)
        module = importlib.import_module(words[2])
        args = module.COMMAND.parser().parse_args(words[3:])  # the tool's own parser takes it
        rewrite = getattr(module, "parse_overrides", list)
        overrides = rewrite(args.overrides)
        for path in args.config or []:
            assert (ROOT / path).is_file(), (command, path)
        for item in overrides:
            assert key_exists(item.partition("=")[0]), (command, item)
        # the config loads and passes every check, but for paths that a run makes first
        kept = [o for o in overrides if not o.startswith(tuple(k + "=" for k in PATH_KEYS + ("export.out",)))]
        load_config([ROOT / p for p in args.config or []], kept)


def test_every_command_help_lists_its_arguments_and_an_example():
    for name in ("fit", "evaluate", "adapt", "compare", "sft", "export"):
        command = importlib.import_module(f"empo2.{name}").COMMAND
        text = command.parser().format_help()
        assert "--config" in text and "overrides" in text and "--print-config" in text, name
        example = text.split("example:\n", 1)[1].splitlines()[0].strip()
        assert example.startswith(f"python -m empo2.{name} --config conf/"), name
        args = command.parser().parse_args(shlex.split(example)[3:])
        assert all((ROOT / p).is_file() for p in args.config)


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("folder, key", [("protocol-keyroom-success-10", "success_rate"), ("protocol-keyroom-10", "return")])
def test_results_page_shows_the_published_ten_seed_cells(folder, key):
    """docs/RESULTS.md's per-seed and memory-path tables are what the published results print today:
    a cell published without its table (or a table edited by hand) fails here."""
    from empo2.comparison_table import read_results_csv

    page = (ROOT / "docs" / "RESULTS.md").read_text()
    published = ROOT / "results" / folder
    cells = "\n".join(_bench("paired_seeds").cells_table(read_results_csv(published / "results.csv"), key))
    assert cells in page, f"docs/RESULTS.md lacks the table of {folder}: print it with bench/paired_seeds.py --cells"
    rows = "\n".join(_bench("memory_path").cells_report(sorted(published.glob("empo2*-training.csv"))))
    assert rows in page, f"docs/RESULTS.md lacks the memory-path table of {folder}: print it with bench/memory_path.py --cells"
