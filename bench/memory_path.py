"""How much EMPO²'s memory path ran in a training cell, iteration by iteration, from its metrics.

A comparison's EMPO² row means little until one knows how often the memory path was drawn (mode
probability p per iteration), whether its prompts carried any tips (the memory may be empty, or
hold nothing for the instances drawn), and how much of the off-policy update the low-probability
mask removed. Those are all logged per iteration (`mode/*`, `memory/tips_per_retrieval`,
`train/masked_token_frac`); this prints them as one table per cell and one summary line, from the
training CSVs a published comparison keeps (`<method>-seed<k>-training.csv`) or a run's own
`metrics.csv`.

    python bench/memory_path.py results/protocol-sciworld-find/empo2*-training.csv

With `--cells` it prints one markdown row per CSV instead (the per-cell report docs/RESULTS.md
shows for the ten-seed grid): iterations that drew a memory mode, those whose prompts carried tips,
and, over the latter, mean tips per retrieval, masked share and raw valid-action rate beside the
valid-action rate of the iterations without tips.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path

from empo2.plots import MODE_STYLE, _num, dominant_mode, iteration_rows, read_rows

MODES = tuple(MODE_STYLE)
"""The three EMPO² modes, by the suffix of their `mode/<name>` metric (the share of groups that drew it)."""


@dataclass(frozen=True)
class IterationPath:
    """One training iteration's memory-path record."""

    iteration: int
    mode: str
    tips_per_retrieval: float
    masked_token_frac: float
    raw_valid_action_rate: float
    extrinsic_return: float
    intrinsic_return: float

    @property
    def used_memory(self) -> bool:
        """The rollouts of this iteration were sampled with tips in their prompts."""
        return self.mode != "on_policy" and self.tips_per_retrieval > 0


def read_iterations(path: Path) -> list[IterationPath]:
    """The per-iteration records of one training CSV (rows merged by epoch, as the plots read them);
    an iteration that drew no mode (no `mode/*` share above 0) is not a training iteration."""
    out = []
    for row in iteration_rows(read_rows(path)):
        if "iteration" not in row or not any(_num(row, f"mode/{m}") > 0 for m in MODES):
            continue
        out.append(IterationPath(
            iteration=int(float(row["iteration"])), mode=dominant_mode(row),
            tips_per_retrieval=_num(row, "memory/tips_per_retrieval"),
            masked_token_frac=_num(row, "train/masked_token_frac"),
            raw_valid_action_rate=_num(row, "rollout/raw_valid_action_rate"),
            extrinsic_return=_num(row, "rollout/return"),
            intrinsic_return=_num(row, "rollout/intrinsic_return")))
    return sorted(out, key=lambda it: it.iteration)


def summary_line(iterations: list[IterationPath]) -> str:
    """How many iterations drew a memory mode, how many of those carried tips, and their mean masked share."""
    drawn = [it for it in iterations if it.mode != "on_policy"]
    used = [it for it in drawn if it.used_memory]
    by_mode = ", ".join(f"{m} {sum(it.mode == m for it in drawn)}" for m in MODES[1:])
    masked = (f"; masked {100 * sum(it.masked_token_frac for it in used) / len(used):.1f}% of trained tokens where tips were carried"
              if used else "")
    return (f"memory modes in {len(drawn)} of {len(iterations)} iterations ({by_mode}); "
            f"{len(used)} of them with tips in the prompts{masked}")


CELL_HEADER = ["| cell | memory modes drawn | with tips | tips/retrieval | masked (off-policy) | valid actions, with tips / without |",
               "|---|---:|---:|---:|---:|---|"]


def cell_row(cell: str, iterations: list[IterationPath]) -> str:
    """One cell's memory path as a markdown row; means are over the iterations that carried tips
    (the masked share over those of them that were off-policy, the only update that masks; `–`
    where there were none)."""
    drawn = [it for it in iterations if it.mode != "on_policy"]
    used = [it for it in drawn if it.used_memory]
    rest = [it for it in iterations if not it.used_memory]
    mean = statistics.fmean
    if used:
        tips = f"{mean([it.tips_per_retrieval for it in used]):.1f}"
        off = [it.masked_token_frac for it in used if it.mode == "off_policy"]  # only the off-policy update masks
        masked = f"{100 * mean(off):.1f}%" if off else "–"
        valid = f"{100 * mean([it.raw_valid_action_rate for it in used]):.1f}%"
    else:
        tips = masked = valid = "–"
    without = f"{100 * mean([it.raw_valid_action_rate for it in rest]):.1f}%" if rest else "–"
    return (f"| {cell} | {len(drawn)} of {len(iterations)} ({', '.join(str(it.iteration) for it in drawn) or 'none'}) | "
            f"{len(used)} | {tips} | {masked} | {valid} / {without} |")


def cells_report(csvs: list[Path]) -> list[str]:
    """The `--cells` table: `CELL_HEADER` and one `cell_row` per training CSV, named by its file."""
    return CELL_HEADER + [cell_row(p.name.removesuffix("-training.csv"), read_iterations(p)) for p in csvs]


def table(iterations: list[IterationPath]) -> list[str]:
    lines = ["  it  mode              tips/retr  masked%  valid%   return  bonus"]
    for it in iterations:
        lines.append(f"  {it.iteration:>2}  {it.mode:<16}  {it.tips_per_retrieval:>9.1f}  {100 * it.masked_token_frac:>7.1f}"
                     f"  {100 * it.raw_valid_action_rate:>6.1f}  {it.extrinsic_return:>7.2f}  {it.intrinsic_return:>5.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csvs", nargs="+", type=Path, help="training CSVs (published `*-training.csv` or a run's metrics.csv)")
    parser.add_argument("--cells", action="store_true", help="one markdown row per CSV instead of a table per iteration")
    args = parser.parse_args(argv)
    missing = [p for p in args.csvs if not p.is_file()]
    if missing:
        print(f"{missing[0]}: no such file; pass a training CSV (results/<comparison>/<method>-seed<k>-training.csv)")
        return 2
    if args.cells:
        print("\n".join(cells_report(args.csvs)))
        return 0
    for path in args.csvs:
        iterations = read_iterations(path)
        print(f"{path}")
        if not iterations:
            print("  no iteration rows with a mode: not a training CSV of this trainer")
            continue
        print("\n".join(table(iterations)))
        print(f"  {summary_line(iterations)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
