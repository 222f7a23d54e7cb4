"""Gold-path lengths of every ScienceWorld task, the measurement behind `empo2.envs.sciworld.TURN_CAPS`.

    .venv/bin/python bench/sciworld_gold_paths.py [--train 5] [--test 20] [--out results/sciworld-gold-paths.csv]

For each of the simulator's 30 tasks, the variations a run plays by default (the first `--train`
of the train split and the first `--test` of the test split, as `env.options.train_variations` /
`test_variations` choose them) are loaded with the simulator's own gold path, in the `easy`
simplification the adapter uses. It prints, per task, the longest and the median path and the cap
that admits the longest with a 25% margin (rounded up to ten turns, never below the default 30).
Rows are appended to `--out` as they come, and tasks already there are skipped, so a stopped run
continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from empo2.envs.sciworld import ScienceWorldEnv, simplification_for  # noqa: E402

FIELDS = ["task", "split", "variation", "gold_path_length"]
MARGIN = 1.25


def cap_for(longest: int, default: int = 30) -> int:
    """The turn cap admitting a gold path of `longest` steps with a 25% margin, in tens."""
    return max(default, 10 * math.ceil(longest * MARGIN / 10))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=5)
    parser.add_argument("--test", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "results" / "sciworld-gold-paths.csv"))
    args = parser.parse_args()
    from scienceworld.constants import TASKS

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.is_file():
        with out.open() as fh:
            done = {r["task"] for r in csv.DictReader(fh)}
    else:
        with out.open("w", newline="") as fh:
            csv.DictWriter(fh, FIELDS).writeheader()
    names = [t["task_name"] for t in TASKS]
    try:
        for task in names:
            if task in done:
                continue
            t0 = time.perf_counter()
            env = ScienceWorldEnv(tasks=[task], train_variations=args.train, test_variations=args.test, examples=0)
            jvm = env._jvm()
            rows = []
            for split in ("train", "test"):
                for instance in env.instances(split):
                    v = int(instance.rpartition("/")[2])
                    jvm.load(task, v, simplification_for(task, "easy"), generateGoldPath=True)
                    rows.append({"task": task, "split": split, "variation": v,
                                 "gold_path_length": len(jvm.get_gold_action_sequence())})
            env.close()
            with out.open("a", newline="") as fh:
                csv.DictWriter(fh, FIELDS).writerows(rows)
            lengths = [r["gold_path_length"] for r in rows]
            print(f"{task:55s} longest {max(lengths):4d}  median {statistics.median(lengths):6.1f}  "
                  f"cap {cap_for(max(lengths)):4d}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
