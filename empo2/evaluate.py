"""`python -m empo2.evaluate --config FILE [ckpt_path=last|PATH] [key=value ...]`: score a policy.

The protocol of EMPO2.md §8: the test split (up to `env.options.test_variations` variations per
task), `eval.episodes_per_instance` episodes each, temperature `eval.temperature`, no memory, no
weight updates. Without `ckpt_path` the untrained base model is scored (the "naive" baseline).

Why one function for both uses: the validation callback (every `eval.val_every` iterations during
fit) and this command play, score and tabulate exactly the same way; the callback lends the run's
environment pool and engine, the command builds its own. Episodes are shared out over ranks and
gathered, so every rank reports the same table; rank 0 writes it.

The table has one row per task (episodes, mean return, mean final score where the environment
reports one, success rate) and a last row averaging the tasks, as papers report it. It is written
as CSV and Markdown under `<run>/eval/`.

Imports inside functions are deliberate: the engine and the module load only after the config has
been checked.
"""

from __future__ import annotations

import csv
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from empo2 import distributed as D
from empo2.checkpoint import resolve_ckpt
from empo2.cli import Command, run_command
from empo2.config import Config
from empo2.engines import RolloutEngine, SamplingParams
from empo2.envs import EnvPool
from empo2.episode import Episode, write_jsonl
from empo2.rollout import run_episodes


@dataclass
class TaskScore:
    task: str
    episodes: int
    mean_return: float
    mean_score: float
    """Mean final environment score (`info["score"]` of the last step), else the mean return."""
    success_rate: float


def eval_instances(cfg: Config, pool: EnvPool) -> list[str]:
    instances = list(cfg.env.test_instances or pool.first().instances(cfg.eval.split))
    if cfg.eval.max_instances is not None:
        instances = instances[: cfg.eval.max_instances]
    if not instances:
        raise ValueError(f"eval: the {cfg.eval.split} split is empty")
    return instances


def final_score(ep: Episode) -> float:
    for step in reversed(ep.steps):
        if "score" in step.info:
            return float(step.info["score"])
    return ep.extrinsic_return


def score_table(records: list[dict[str, Any]]) -> list[TaskScore]:
    """Per-task means over episode records (`task`, `return`, `score`, `success`), plus the mean row."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    rows = []
    for task in sorted(by_task):
        eps = by_task[task]
        n = len(eps)
        rows.append(TaskScore(
            task, n, sum(e["return"] for e in eps) / n, sum(e["score"] for e in eps) / n,
            sum(bool(e["success"]) for e in eps) / n,
        ))
    if rows:
        k = len(rows)
        rows.append(TaskScore(
            "mean over tasks", sum(r.episodes for r in rows), sum(r.mean_return for r in rows) / k,
            sum(r.mean_score for r in rows) / k, sum(r.success_rate for r in rows) / k,
        ))
    return rows


def write_table(rows: list[TaskScore], out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    lines = ["| task | episodes | mean return | mean score | success rate |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r.task} | {r.episodes} | {r.mean_return:.1f} | {r.mean_score:.1f} | {r.success_rate:.3f} |" for r in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def evaluate_policy(
    cfg: Config, pool: EnvPool, engine: RolloutEngine, tokenizer, seed: int, progress: bool = False,
) -> tuple[list[TaskScore], list[Episode]]:
    """Play this rank's share of the evaluation episodes; return the table over all ranks."""
    import numpy as np
    import torch

    rank, world = D.rank(), D.world_size()
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)
    instances = eval_instances(cfg, pool)
    n = cfg.eval.episodes_per_instance
    everything = [(inst, k) for inst in instances for k in range(n)]
    mine = everything[rank::world]
    episodes = [Episode(uid=f"eval-{inst}-{k}", instance=inst, group=f"eval-{inst}") for inst, k in mine]
    r = cfg.rollout
    params = SamplingParams(max_new_tokens=r.max_new_tokens, temperature=cfg.eval.temperature, stop=list(r.stop))
    # At most one engine batch plays at once (the next episode starts as one ends): the HF engine
    # keeps its cache only for calls that fit one batch, and fewer environments (JVMs) run.
    envs = pool.take(min(len(episodes), cfg.engine.max_batch_size))
    run_episodes(
        envs, episodes, engine, tokenizer, params, r.max_prompt_tokens, max_turns=cfg.env.max_turns,
        progress=progress, desc=f"evaluation ({len(everything)} episodes)", layout=r.prompt_layout,
        env_threads=r.env_thread_count,
    )
    task_of = envs[0].task_of
    records = [
        {"task": task_of(ep.instance), "return": ep.extrinsic_return, "score": final_score(ep), "success": ep.success}
        for ep in episodes
    ]
    gathered = [rec for part in D.gather_objects(records) for rec in part]
    return score_table(gathered), episodes


def table_metrics(rows: list[TaskScore], prefix: str = "val") -> dict[str, float]:
    mean = rows[-1]
    return {f"{prefix}/return": mean.mean_return, f"{prefix}/score": mean.mean_score,
            f"{prefix}/success_rate": mean.success_rate, f"{prefix}/episodes": float(mean.episodes)}


def evaluate(cfg: Config) -> tuple[list[TaskScore], Path]:
    """Build the policy (from `ckpt_path` if given), evaluate, write the table; return it and its path."""
    from empo2.engines import build_engine
    from empo2.module import EMPO2Module

    ckpt = resolve_ckpt(cfg)
    module = EMPO2Module.from_checkpoint(cfg, ckpt)
    engine = build_engine(cfg, module.policy, module.tokenizer, cfg.run_dir / "engine" / f"eval-rank{D.rank()}")
    engine.sync_weights()  # an engine with its own copy of the weights loads the checkpoint's
    with EnvPool.from_config(cfg.env) as pool:
        try:
            rows, episodes = evaluate_policy(cfg, pool, engine, module.tokenizer, cfg.seed, progress=cfg.logging.progress_bar)
        finally:
            engine.close()
    stem = f"{cfg.eval.split}-{Path(ckpt).stem if ckpt else 'base'}"
    out_dir = cfg.run_dir / "eval"
    if D.rank() == 0:
        write_jsonl(out_dir / f"{stem}.jsonl", episodes)
        write_table(rows, out_dir, stem)
        from empo2.plots import score_bars

        score_bars({stem: {r.task: r.mean_return for r in rows}}, out_dir / f"{stem}.png",
                   title=f"{cfg.name}: {cfg.eval.split} split, {stem}")
    return rows, out_dir / f"{stem}.md"


COMMAND = Command("empo2.evaluate", "Evaluate a policy on the test split.",
                  example="--config conf/quickstart.yaml ckpt_path=last eval.episodes_per_instance=2",
                  config_help="the YAML file(s) the run was trained with",
                  overrides_help="key=value overrides, e.g. ckpt_path=last eval.episodes_per_instance=2",
                  errors=(ValueError,))


def main(argv: list[str] | None = None) -> int:
    def run(cfg: Config) -> int:
        rows, md_path = evaluate(cfg)
        print(md_path.read_text(), end="")
        print(f"written: {md_path} and {md_path.with_suffix('.csv')}")
        return 0

    return run_command(COMMAND, argv, run)

if __name__ == "__main__":
    raise SystemExit(main())
