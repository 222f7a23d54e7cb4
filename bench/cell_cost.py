"""What one (method, seed) cell of a learning protocol costs, in float32 and in bf16, in one run.

A protocol cell is `trainer.max_epochs` training iterations plus one evaluation. This runs the first
few iterations of one method exactly as `python -m empo2.compare` would configure it (its variant
overrides, its warm start), once per precision setting, then the evaluation, and prints the wall
time of each iteration, the per-phase means (iteration 0 is left out of the means: it loads the
model and starts the environments), the projected cell cost and the bf16/fp32 ratios. Sampling
differs between the two settings after the first token, so episodes differ too: the per-phase
throughputs (generated tokens per second, trained tokens per second) are printed beside the times,
since they compare the machine's work and not the policy's choices.

    python bench/cell_cost.py --config conf/protocol/keyroom-success.yaml --method empo2-split [--iterations 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L

from empo2.compare import method_config, warm_start_config
from empo2.config import load_config
from empo2.evaluate import evaluate
from empo2.fit import fit
from empo2.plots import iteration_rows, read_rows
from empo2.sft import POLICY_DIR, RECORD

SETTINGS = {
    "fp32": {"precision": "32-true", "checkpointing": False},
    "bf16": {"precision": "bf16-mixed", "checkpointing": True},
}
PHASES = ["time/generation_s", "time/tip_generation_s", "time/old_logprob_s", "time/update_s", "time/rollout_s"]
RATES = ["rollout/gen_tokens_per_s", "train/trained_tokens_per_s"]


class IterationClock(L.Callback):
    """Wall time of each whole iteration (rollouts, hooks and update), end to end."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._last = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:  # before the first iteration's rollouts
        self._last = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        now = time.perf_counter()
        self.seconds.append(now - self._last)
        self._last = now


def run_setting(cfg, method: str, warm: Path | None, out: Path, setting: str, iterations: int) -> dict:
    run = method_config(cfg, method, None, cfg.seed, warm)
    run.out_dir, run.name = str(out), setting
    run.trainer["max_epochs"] = iterations
    run.trainer["precision"] = SETTINGS[setting]["precision"]
    run.model.gradient_checkpointing = SETTINGS[setting]["checkpointing"]
    clock = IterationClock()
    fit(run, extra_callbacks=[clock])
    rows = iteration_rows(read_rows(run.run_dir / "logs" / "metrics.csv"))
    run.ckpt_path = "last"
    t0 = time.perf_counter()
    evaluate(run)
    later = rows[1:] or rows

    def mean(key: str) -> float:
        vals = [float(r[key]) for r in later if r.get(key)]
        return statistics.fmean(vals) if vals else 0.0

    return {"iterations": clock.seconds, "eval_s": time.perf_counter() - t0,
            "phases": {k: mean(k) for k in PHASES + RATES}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="conf/protocol/keyroom-success.yaml")
    ap.add_argument("--method", default="empo2-split", help="a compare method that trains (grpo, empo2, a variant)")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    policy = warm_start_config(cfg, None).run_dir / POLICY_DIR
    warm = policy if cfg.compare.warm_start and (policy / RECORD).is_file() else None
    print(f"{args.config}, method {args.method}, {args.iterations} iterations per setting, "
          f"warm start: {warm or 'none (run the protocol once to make one)'}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings:
            results[setting] = run_setting(cfg, args.method, warm, Path(tmp), setting, args.iterations)
    cell_iters = int(cfg.trainer["max_epochs"])
    print(f"\n{'':24s}" + "".join(f"{s:>12s}" for s in results))
    for i in range(args.iterations):
        print(f"{f'iteration {i} (s)':24s}" + "".join(f"{r['iterations'][i]:12.1f}" for r in results.values()))
    for key in PHASES + RATES:
        print(f"{key:24s}" + "".join(f"{r['phases'][key]:12.1f}" for r in results.values()))
    print(f"{'evaluation (s)':24s}" + "".join(f"{r['eval_s']:12.1f}" for r in results.values()))
    projected = {}
    for s, r in results.items():
        later = r["iterations"][1:] or r["iterations"]
        projected[s] = (statistics.fmean(later) * cell_iters + r["eval_s"]) / 60
    print(f"{f'cell of {cell_iters} iter. (min)':24s}" + "".join(f"{v:12.1f}" for v in projected.values()))
    if {"fp32", "bf16"} <= set(results):
        f, b = results["fp32"], results["bf16"]
        print(f"\nbf16 / fp32: iteration {statistics.fmean(b['iterations'][1:] or b['iterations']) / statistics.fmean(f['iterations'][1:] or f['iterations']):.2f}x, "
              f"cell {projected['bf16'] / projected['fp32']:.2f}x, "
              + ", ".join(f"{k.split('/')[1]} {b['phases'][k] / f['phases'][k]:.2f}x" for k in PHASES + RATES if f["phases"][k]))


if __name__ == "__main__":
    main()
