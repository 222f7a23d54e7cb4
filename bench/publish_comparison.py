"""Copy a comparison's results out of its run folder into a folder meant for committing.

`python -m empo2.compare` keeps everything under `<run>/compare/` (checkpoints, memories, every
episode), far too much to commit. This writes the part a reader of docs/RESULTS.md needs, small and
regenerable from the run folder with one command:

- the harness's table, curves and plots (`results.csv`, `summary.md`, `curves.csv`,
  `comparison.png`, `curves.png`), redrawn from the run's CSVs by `empo2.comparison_table.write_outputs`;
- per trained cell, its training metrics one row per iteration (`<method>-seed<k>-training.csv`);
- per reflexion cell, its adaptation table (`reflexion-seed<k>-adaptation.csv`);
- per task, the warm start's record (`warm_start/<task folder>.json`: what it trained on, its
  held-out answer NLL per epoch; the weights are too large to commit);
- per cell, the held-out episodes it was scored on, gzipped (`episodes/<method>-seed<k>-eval.jsonl.gz`;
  for reflexion the last adaptation iteration's), which `bench/episode_actions.py` reads.

With several tasks every file name starts with `<task>-`. Files are rewritten, never deleted, so
cells published earlier from another machine's run folder keep their episodes and metrics.

The reverse, on a fresh machine whose `runs/` is empty, puts the finished cells back so the same
`empo2.compare` command continues the comparison instead of starting it over:

    python bench/publish_comparison.py runs/protocol-keyroom-success results/protocol-keyroom-success
    python bench/publish_comparison.py --restore results/protocol-keyroom-success runs/protocol-keyroom-success
"""

from __future__ import annotations

import argparse
import csv
import gzip
import shutil
import sys
from pathlib import Path

from empo2.compare import restore_published
from empo2.comparison_table import read_results_csv, write_outputs
from empo2.config import ConfigError
from empo2.plots import iteration_rows, read_rows
from empo2.sft import POLICY_DIR, RECORD


def cell_folder(compare_dir: Path, task: str, seed: str, method: str) -> Path:
    """A cell's run folder: `<task>-seed<k>/<method>`, or `task-seed<k>/<method>` when the
    comparison ran on the config's own task (its rows are labelled with the environment's name)."""
    named = compare_dir / f"{task}-seed{seed}" / method
    return named if named.is_dir() else compare_dir / f"task-seed{seed}" / method


def scored_episodes(cell: Path) -> Path | None:
    """The episode file a cell's score came from: its evaluation's (`eval/test-*.jsonl`) or, for
    a reflexion cell, its adaptation loop's last iteration."""
    evals = sorted((cell / "eval").glob("test-*.jsonl"))
    if evals:
        return evals[-1]
    iterations = sorted(cell.glob("adapt/*/trajectories/iter_*.jsonl"))
    return iterations[-1] if iterations else None


def write_gzip(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as fin, gzip.GzipFile(dst, "wb", mtime=0) as fout:  # mtime 0: same bytes, same file
        shutil.copyfileobj(fin, fout)


def write_rows(rows: list[dict[str, str]], dst: Path) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with dst.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def publish(run: Path, out: Path) -> list[Path]:
    compare_dir = run / "compare"
    results = read_results_csv(compare_dir / "results.csv")
    if not results:
        raise SystemExit(f"{compare_dir / 'results.csv'}: no finished cell to publish; run empo2.compare first")
    written = [write_outputs(results, out, f"{run.name}: methods compared", read_results_csv(compare_dir / "curves.csv"))]
    several_tasks = len({r["task"] for r in results}) > 1
    for record in sorted(compare_dir.glob(f"*/warm_start/{POLICY_DIR}/{RECORD}")):
        dst = out / "warm_start" / f"{record.parents[2].name}.json"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(record, dst)
        written.append(dst)
    for r in results:
        cell = cell_folder(compare_dir, r["task"], r["seed"], r["method"])
        stem = f"{r['task']}-" * several_tasks + f"{r['method']}-seed{r['seed']}"
        metrics = cell / "logs" / "metrics.csv"
        if metrics.is_file():
            write_rows(iteration_rows(read_rows(metrics)), out / f"{stem}-training.csv")
            written.append(out / f"{stem}-training.csv")
        for table in cell.glob("adapt/*/adaptation.csv"):
            shutil.copyfile(table, out / f"{stem}-adaptation.csv")
            written.append(out / f"{stem}-adaptation.csv")
        episodes = scored_episodes(cell)
        if episodes is not None:
            write_gzip(episodes, out / "episodes" / f"{stem}-eval.jsonl.gz")
            written.append(out / "episodes" / f"{stem}-eval.jsonl.gz")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--restore", nargs=2, type=Path, metavar=("PUBLISHED", "RUN"),
                        help="the reverse: seed RUN/compare/ with PUBLISHED's finished cells")
    parser.add_argument("run", type=Path, nargs="?", help="the comparison's run folder (holds compare/)")
    parser.add_argument("out", type=Path, nargs="?", help="where to write (e.g. results/<name>)")
    args = parser.parse_args(argv)
    if args.restore is not None:
        try:
            written = restore_published(*args.restore)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    elif args.run is None or args.out is None:
        parser.error("give RUN and OUT, or --restore PUBLISHED RUN")
    else:
        written = publish(args.run, args.out)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
