"""Two methods' held-out episodes compared pair by pair: how much of a per-seed gap is noise.

The table's paired column (`summary.md`) takes one number per seed, so three seeds give a standard
deviation from three values. When the cells of one seed play the same held-out instances in the
same order from the same starting point, their episodes pair up one to one, and each seed's
difference has a standard error of its own, from its episode pairs. Three per-seed differences
that agree more closely than those standard errors allow agree by luck; the pooled episode pairs
say how far the mean difference is from zero. Episodes of one instance are not independent, so
the standard error is a lower bound.

Reads `episodes/<method>-seed<k>-eval.jsonl.gz` of a published protocol folder
(`bench/publish_comparison.py` writes them; a comparison of several tasks prefixes each file with
`<task>-`, so name both methods that way, e.g. `--method sciworld-empo2 --reference sciworld-grpo`):

    python bench/paired_episodes.py results/protocol-sciworld-find --method empo2-split --reference grpo
    python bench/paired_episodes.py results/protocol-keyroom-success --method empo2-split --key success
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from episode_actions import read_episodes  # noqa: E402  (a sibling script)

EVAL_FILE = re.compile(r"(?P<method>.+)-seed(?P<seed>\d+)-eval\.jsonl(\.gz)?$")


@dataclass(frozen=True)
class PairedEpisodes:
    """One method minus a reference over episodes paired by position (same instance, same slot)."""
    pairs: int
    differing: int
    """Pairs whose returns differ: the rest are the same outcome and carry no information on the gap."""
    mean: float
    standard_error: float
    """Sample standard deviation of the differences over sqrt(pairs); 0 with a single pair."""

    @property
    def t(self) -> float:
        if self.standard_error == 0:
            return 0.0 if self.mean == 0 else math.copysign(math.inf, self.mean)
        return self.mean / self.standard_error


def paired_episode_difference(method: list[float], reference: list[float]) -> PairedEpisodes:
    """Mean of `method[i] - reference[i]` and its standard error over the pairs."""
    if len(method) != len(reference) or not method:
        raise ValueError(f"cannot pair {len(method)} episodes with {len(reference)}: both need the same non-zero count")
    diffs = [m - r for m, r in zip(method, reference)]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    return PairedEpisodes(len(diffs), sum(d != 0 for d in diffs), statistics.fmean(diffs), se)


def paired_outcomes(method_file: Path, reference_file: Path, key: str = "return") -> tuple[list[float], list[float]]:
    """Both files' `key` (return, or success as 0/1) per episode, after checking that they played
    the same instances in the same order."""
    a, b = read_episodes(method_file), read_episodes(reference_file)
    if [e["instance"] for e in a] != [e["instance"] for e in b]:
        raise ValueError(f"{method_file} and {reference_file} did not play the same instances in the same order; "
                         "pair episodes of one protocol seed only")
    return [float(e[key]) for e in a], [float(e[key]) for e in b]


def eval_files(folder: Path, method: str) -> dict[int, Path]:
    """Seed -> evaluation episode file of `method` in a published protocol folder."""
    found = {}
    for path in sorted((folder / "episodes").glob("*-eval.jsonl*")):
        match = EVAL_FILE.match(path.name)
        if match and match["method"] == method:
            found[int(match["seed"])] = path
    return found


def _line(label: str, p: PairedEpisodes) -> str:
    return f"{label:<8} {p.pairs:>5} {p.differing:>9} {p.mean:>+8.3f} {p.standard_error:>6.3f} {p.t:>+6.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a published protocol folder (with episodes/)")
    parser.add_argument("--method", required=True)
    parser.add_argument("--reference", default="grpo")
    parser.add_argument("--key", choices=("return", "success"), default="return")
    args = parser.parse_args(argv)
    mine, theirs = eval_files(args.folder, args.method), eval_files(args.folder, args.reference)
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        print(f"{args.folder / 'episodes'}: no seed with evaluation episodes of both {args.method!r} and "
              f"{args.reference!r}; publish the protocol first (bench/publish_comparison.py)", file=sys.stderr)
        return 2
    print(f"{args.method} − {args.reference}, held-out {args.key} of episodes paired by position")
    print("seed     pairs differing     mean     se      t")  # the columns _line writes
    pooled_mine, pooled_theirs = [], []
    try:
        for seed in seeds:
            a, b = paired_outcomes(mine[seed], theirs[seed], args.key)
            pooled_mine += a
            pooled_theirs += b
            print(_line(str(seed), paired_episode_difference(a, b)))
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    print(_line("pooled", paired_episode_difference(pooled_mine, pooled_theirs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
