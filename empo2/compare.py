"""`python -m empo2.compare --config FILE [compare.seeds=[0,1,2]] [compare.tasks=[...]]`: baselines, like for like.

Why one harness: a comparison is only fair when every method plays the same instances with the same
model, prompts, budgets and scorer. Every method here is this trainer with switches, scored on the
test split at `eval.temperature` with `eval.episodes_per_instance` episodes per instance:

- **naive**: the base model, no memory, no training (`evaluate` without a checkpoint);
- **reflexion**: the base model, memory only, no weight updates: the adaptation loop on the test
  instances themselves for `trainer.max_epochs` iterations (every instance, `episodes_per_instance`
  episodes each, so each iteration is one full evaluation); its score is the last iteration's, after
  the memory of all earlier attempts;
- **grpo**: training with `mode.p = 0` (no memory, no novelty bonus), then evaluation;
- **gigpo**, **hgpo**: as grpo, with step-level credit (`algo.advantage` gigpo or hgpo);
- **empo2**: training with the config as given, then evaluation (no memory at test time); its
  estimator is the config's `algo.advantage`, so EMPO² with step-level credit is that one switch.

Writes `<run>/compare/`: `results.csv` (one row per method × task × seed), `summary.md` (mean ± std
over seeds per task, and the mean over tasks), `comparison.png`; each method's own run folder
(checkpoints, metrics, curves, episodes) is under `<run>/compare/<task>-seed<S>/<method>/`.
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import sys
from pathlib import Path

from empo2.config import Config, ConfigError, check_values, load_config

MEAN = "mean over tasks"
PLAIN_RL = {"grpo": "grpo", "gigpo": "gigpo", "hgpo": "hgpo"}
"""Methods that train without memory or novelty bonus, and the advantage estimator each uses."""


def method_config(cfg: Config, method: str, task: str | None, seed: int) -> Config:
    """The config of one method on one task and seed (its own run folder)."""
    from empo2.adapt import retarget_env

    out = copy.deepcopy(cfg)
    out.seed = seed
    if task is not None:
        retarget_env(out, task, "compare.tasks")
    out.out_dir = str(cfg.run_dir / "compare" / f"{task or 'task'}-seed{seed}")
    out.name = method
    out.ckpt_path = None
    out.eval.val_every = 0
    if method in PLAIN_RL:
        out.mode.p = 0.0
        out.memory.enabled = False
        out.intrinsic.kind = "none"
        out.algo.advantage = PLAIN_RL[method]
    check_values(out)
    return out


def count_test_instances(cfg: Config) -> int:
    from empo2.envs import env_class
    from empo2.envs.pool import EnvPool
    from empo2.evaluate import eval_instances

    with EnvPool(env_class(cfg.env.name, cfg.env.cls), cfg.env.options, 1) as pool:
        return len(eval_instances(cfg, pool))


def run_method(cfg: Config, method: str) -> dict[str, float]:
    """Train (when the method trains) and score one method; {'return', 'success_rate'}."""
    from empo2.adapt import adapt
    from empo2.evaluate import evaluate
    from empo2.fit import fit

    if method == "reflexion":
        cfg.adapt.split, cfg.adapt.temperature = "test", cfg.eval.temperature
        cfg.adapt.iterations, cfg.adapt.target_task = cfg.trainer["max_epochs"], None
        cfg.rollout.tasks_per_iteration = count_test_instances(cfg)
        cfg.rollout.group_size = cfg.eval.episodes_per_instance
        rows, _, _ = adapt(cfg)
        return {"return": rows[-1]["return"], "success_rate": rows[-1]["success_rate"]}
    if method in PLAIN_RL or method == "empo2":
        fit(cfg)
        cfg.ckpt_path = "last"
    table, _ = evaluate(cfg)
    return {"return": table[-1].mean_return, "success_rate": table[-1].success_rate}


def summarise(results: list[dict]) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Per method and task: mean and (sample) std of the return over seeds, plus the mean over tasks."""
    means: dict[str, dict[str, float]] = {}
    stds: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(r["method"] for r in results):
        mine = [r for r in results if r["method"] == method]
        for task in dict.fromkeys(r["task"] for r in mine):
            vals = [r["return"] for r in mine if r["task"] == task]
            means.setdefault(method, {})[task] = statistics.fmean(vals)
            stds.setdefault(method, {})[task] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        per_seed = [statistics.fmean(r["return"] for r in mine if r["seed"] == s) for s in dict.fromkeys(r["seed"] for r in mine)]
        means[method][MEAN] = statistics.fmean(per_seed)
        stds[method][MEAN] = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
    return means, stds


def write_outputs(results: list[dict], out_dir: Path, title: str) -> Path:
    from empo2.plots import score_bars

    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["method", "task", "seed", "return", "success_rate"])
        writer.writeheader()
        writer.writerows(results)
    means, stds = summarise(results)
    tasks = [t for t in next(iter(means.values())) if t != MEAN] + [MEAN]
    seeds = sorted({r["seed"] for r in results})
    lines = [f"Mean return ± std over seeds {seeds} (test split; success rates in results.csv).", "",
             "| method | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for method in means:
        cells = [f"{means[method][t]:.1f} ± {stds[method][t]:.1f}" for t in tasks]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    score_bars(means, out_dir / "comparison.png", ylabel="mean return (test split)", title=title, errors=stds)
    return out_dir / "summary.md"


def compare(cfg: Config) -> tuple[list[dict], Path]:
    results = []
    for task in cfg.compare.tasks or [None]:
        for seed in cfg.compare.seeds:
            for method in cfg.compare.methods:
                mcfg = method_config(cfg, method, task, seed)
                score = run_method(mcfg, method)
                results.append({"method": method, "task": task or cfg.env.name, "seed": seed, **score})
                print(f"{method:>9}  {task or cfg.env.name}  seed {seed}: return {score['return']:.2f}  "
                      f"success {score['success_rate']:.2f}", flush=True)
    summary = write_outputs(results, cfg.run_dir / "compare", title=f"{cfg.name}: methods compared")
    return results, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m empo2.compare", description="Run baselines and EMPO² in one harness.")
    parser.add_argument("--config", action="append", help="YAML file(s): the EMPO² run every method derives from")
    parser.add_argument("overrides", nargs="*", help="compare.seeds=[0,1] compare.tasks=[...] compare.methods=[...] ...")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        _, summary = compare(cfg)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    print(summary.read_text())
    print(f"written to {summary.parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
