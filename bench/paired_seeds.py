"""The pre-registered analysis of the ten-seed KeyRoom comparison (docs/RESULTS.md, "Pre-registered:
does EMPO²'s memory help, over ten seeds?"), applied to a published comparison folder.

For each comparison the pre-registration names (each EMPO² form against GRPO, the primary being
`empo2-split`; `empo2-split-trace` and `empo2-split-p50` against `empo2-split`): the per-seed paired
difference D_s = metric(X, s) − metric(reference, s) over the seeds both have finished, its mean D̄,
the 95% interval D̄ ± t(0.975, n−1) · sd(D) / √n (Student's t; 2.262 at ten seeds), and the verdict
of the decision rule with its equivalence margin δ:
- "helps": the interval lies above 0; "hurts": below 0;
- "no difference": it contains 0 and lies within ±δ;
- "inconclusive": it contains 0 and reaches beyond ±δ.
Before every seed has finished the verdict is printed as interim, with the seeds it rests on; the
pre-registered conclusion is the one at ten seeds.

    python bench/paired_seeds.py results/protocol-keyroom-success-10 --key success_rate --margin 0.05
    python bench/paired_seeds.py results/protocol-keyroom-10 --key return --margin 5

With `--cells` it prints instead the cells behind those differences: one row per method, one
column per pre-registered seed (`·` where the cell has not finished), and the mean over the seeds
finished; docs/RESULTS.md shows this table as printed from `results/`.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import t as student_t

from empo2.comparison_table import paired_differences, read_results_csv, seed_means

PREREGISTERED = [("empo2-split", "grpo"), ("empo2", "grpo"), ("empo2-split-p50", "grpo"),
                 ("empo2-split-trace", "grpo"), ("empo2-split-trace", "empo2-split"),
                 ("empo2-split-p50", "empo2-split")]
"""(method, reference) in the order the pre-registration lists them; the first is the primary."""
SEEDS = 10
"""Seeds per method the pre-registration fixes: the verdict is final only at this many pairs."""


@dataclass(frozen=True)
class PairedInterval:
    """Mean of per-seed differences with its two-sided Student's t interval."""
    n: int
    mean: float
    sd: float
    """Sample standard deviation of the differences (n − 1 in the denominator)."""
    half_width: float
    """t(1 − (1 − level)/2, n − 1) · sd / √n; infinite with fewer than two differences."""

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def paired_interval(differences: list[float], level: float = 0.95) -> PairedInterval:
    """The interval of the pre-registered analysis for per-seed differences."""
    n = len(differences)
    if n == 0:
        raise ValueError("no seed has finished for both methods")
    mean = statistics.fmean(differences)
    if n == 1:
        return PairedInterval(1, mean, math.nan, math.inf)
    sd = statistics.stdev(differences)
    return PairedInterval(n, mean, sd, float(student_t.ppf(1 - (1 - level) / 2, n - 1)) * sd / math.sqrt(n))


def verdict(interval: PairedInterval, margin: float) -> str:
    """The pre-registered decision rule with equivalence margin `margin` (δ)."""
    if interval.low > 0:
        return "helps"
    if interval.high < 0:
        return "hurts"
    if -margin <= interval.low and interval.high <= margin:
        return "no difference"
    return "inconclusive"


def report(results: list[dict], key: str, margin: float) -> list[str]:
    """One markdown row per pre-registered comparison whose methods both have finished seeds."""
    lines = ["| X − reference | seeds | D per seed | D̄ | 95% interval | verdict |", "|---|---:|---|---:|---|---|"]
    for method, reference in PREREGISTERED:
        diffs = paired_differences(results, method, reference, key)
        if not diffs:
            continue
        iv = paired_interval(list(diffs.values()))
        status = verdict(iv, margin) if iv.n >= SEEDS else f"interim: {verdict(iv, margin)}"
        per_seed = ", ".join(f"{d:+.3g}" for d in diffs.values())
        lines.append(f"| {method} − {reference} | {iv.n} | {per_seed} | {iv.mean:+.3f} | "
                     f"[{iv.low:+.3f}, {iv.high:+.3f}] | {status} |")
    return lines


def cells_table(results: list[dict], key: str) -> list[str]:
    """One markdown row per method (in the order of `results`) with its `key` at seeds 0..SEEDS−1
    and the mean over the seeds it has finished."""
    digits = 3 if key == "success_rate" else 2  # success: a share of 80 episodes; return: to the cent
    head = "| method | " + " | ".join(f"s{s}" for s in range(SEEDS)) + " | mean (seeds) |"
    lines = [head, "|---|" + "---:|" * (SEEDS + 1)]
    for method in dict.fromkeys(r["method"] for r in results):
        per_seed = seed_means(results, method, key)
        cells = [f"{per_seed[str(s)]:.{digits}f}" if str(s) in per_seed else "·" for s in range(SEEDS)]
        mean = statistics.fmean(per_seed.values())
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {mean:.{digits}f} ({len(per_seed)}) |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a published comparison folder (its results.csv)")
    ap.add_argument("--key", default="success_rate", choices=["success_rate", "return"],
                    help="the primary metric: success_rate (success-only protocol) or return (shaping)")
    ap.add_argument("--margin", type=float, default=0.05, help="the equivalence margin δ, in the metric's units")
    ap.add_argument("--cells", action="store_true", help="print each method's metric per seed instead")
    args = ap.parse_args(argv)
    table = args.folder / "results.csv"
    if not table.is_file():
        print(f"error: {table} not found: pass a comparison folder that holds results.csv", file=sys.stderr)
        return 2
    rows = read_results_csv(table)
    print("\n".join(cells_table(rows, args.key) if args.cells else report(rows, args.key, args.margin)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
