"""Share of iteration time spent on the memory path: retrieval + memory writes, and tip generation.

Runs a config (default: the quickstart, embedded SmolLM2-135M on KeyRoom) with every iteration in a
memory mode (mode.p=1, so retrieval runs at every step of every episode) and reports, from the
metrics of the same run:
  retrieval + writes  = time/retrieval_s + time/memory_write_s   (embedding, LanceDB, ranking)
  tip generation      = time/tip_generation_s                    (the policy writing one tip per episode)
  novelty             = time/intrinsic_s
each as a share of rollout time (time/rollout_s + tip generation + writes + novelty) and of
iteration time (that plus the old-log-prob pass and the update). The authors' stack spent ~19% of
rollout time on the memory path; our target is ≤ 5% for retrieval + writes.

    python bench/memory_overhead.py [--config conf/quickstart.yaml] [--iterations 3] [key=value ...]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from empo2.config import load_config
from empo2.fit import fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="conf/quickstart.yaml")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, ["mode.p=1.0", *args.overrides, f"out_dir={tmp}",
                                        f"trainer.max_epochs={args.iterations}", "logging.progress_bar=false",
                                        "trainer.enable_model_summary=false"])
        fit(cfg)
        with (Path(tmp) / cfg.name / "logs" / "metrics.csv").open() as fh:
            rows = list(csv.DictReader(fh))
    tot = {k: sum(float(r[k]) for r in rows) for k in (
        "time/rollout_s", "time/retrieval_s", "time/memory_write_s", "time/tip_generation_s", "time/intrinsic_s",
        "time/old_logprob_s", "time/update_s", "time/generation_s", "memory/entries_written")}
    memory = tot["time/retrieval_s"] + tot["time/memory_write_s"]
    rollout = tot["time/rollout_s"] + tot["time/tip_generation_s"] + tot["time/memory_write_s"] + tot["time/intrinsic_s"]
    iteration = rollout + tot["time/old_logprob_s"] + tot["time/update_s"]
    print(f"config: {args.config}  iterations: {len(rows)}  entries written: {tot['memory/entries_written']:.0f}  "
          f"final memory: {float(rows[-1]['memory/entries']):.0f} entries")
    print(f"rollout phase {rollout:.1f} s (generation {tot['time/generation_s']:.1f} s), iteration {iteration:.1f} s")
    for name, secs in (("retrieval + writes", memory), ("tip generation", tot["time/tip_generation_s"]),
                       ("novelty reward", tot["time/intrinsic_s"])):
        print(f"{name:20s} {secs:7.2f} s   {secs / rollout:6.1%} of rollout   {secs / iteration:6.1%} of iteration")


if __name__ == "__main__":
    main()
