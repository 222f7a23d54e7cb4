"""`python -m empo2.adapt --config FILE [ckpt_path=PATH] target_task=TASK [adapt.iterations=K]`.

Out-of-distribution adaptation with memory only (EMPO2.md §8): a trained policy plays a new task
for K iterations; after every episode it writes a tip, and from iteration 1 on it retrieves tips,
exactly as in training, but no weight ever changes. Without `ckpt_path` the base model adapts,
which is the Reflexion-style baseline.

Why the training loop, frozen, rather than a second loop: tips must be written and retrieved
*exactly* as in training (same datamodule, same TipMemory callback, same prompts, same ranks),
so the adaptation run is a Lightning fit whose module has no optimizer (`FrozenPolicy`: no step
can happen, and its parameters do not require gradients) and whose datamodule builds no training
rows (`AdaptationData`). Iteration 0 plays without memory; its tips seed the memory.

Writes `<run>/adapt/<task>-seed<S>/`: `memory/`, `trajectories/` (+ `index.html`), `logs/metrics.csv`,
`checkpoints/` and `adaptation.csv` / `adaptation.png` (return per iteration). An earlier folder of
the same name is moved aside (`.1`, `.2`, ...), never reused: its memory would leak into iteration
0. The exception is `adapt(cfg, resume=True)` (what `empo2.compare` runs for its reflexion cells,
which can take longer than a working session): a folder with a checkpoint continues from its last
finished iteration, its memory restored to that iteration's version. A checkpoint holds no weights
(they never change; they come from `ckpt_path` / `model.init_from` again), only the iteration, the
memory version and the sampling state, so the continued run plays what a straight run would.

Imports inside functions are deliberate: the trainer loads only after the config has been checked.
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Checkpoint

from datamodules import RolloutDataModule
from empo2.cli import Command, run_command
from empo2.config import Config, ConfigError, to_yaml, validate
from empo2.modes import Mode
from empo2.module import EMPO2Module


class FrozenPolicy(EMPO2Module):
    """The policy without an optimizer: a fit with it plays and scores episodes, nothing else."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.strict_loading = False  # its checkpoints hold no weights (on_save_checkpoint)

    def configure_optimizers(self):
        return None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {}  # the weights are the source's, loaded again on a resume

    def training_step(self, rows: list[dict[str, Any]], batch_idx: int) -> None:
        return None

    def on_train_epoch_end(self) -> None:
        metrics = {"iteration": float(self.current_epoch), **self.trainer.datamodule.iteration_metrics}
        self.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=self.trainer.world_size > 1)


class IterationCheckpoint(Checkpoint):
    """The adaptation's checkpoint writer: `last.ckpt` after every iteration. ModelCheckpoint saves only
    when an optimizer step has happened since its last save, and the frozen policy takes none."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # the full state: a resume needs it


class AdaptationData(RolloutDataModule):
    """Rollouts of the target task: no memory at iteration 0, memory from then on; no training rows."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.learn = False

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.cfg.adapt.split == "test":
            self.train_instances = list(self.cfg.env.test_instances or self.envs[0].instances("test"))

    def sample_modes(self, n_groups: int) -> list[Mode]:
        return [Mode.ON_POLICY if self.trainer.current_epoch == 0 else Mode.ON_POLICY_MEMORY] * n_groups


def retarget_env(cfg: Config, task: str, key: str) -> None:
    """Point `cfg.env` at `task` in place (the environment's own `retarget`); instance lists set for
    the old task no longer apply. Errors name `key`, the setting that asked for the task."""
    from empo2.envs import env_class

    try:
        cfg.env.options = env_class(cfg.env.name, cfg.env.cls).retarget(dict(cfg.env.options), task)
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from None
    cfg.env.train_instances = cfg.env.test_instances = None


def adaptation_config(cfg: Config) -> Config:
    """The run config of an adaptation: the target task, memory on, every iteration a memory mode
    (on-policy with tips; there is no update to be off-policy for), no novelty bonus (it only
    shapes advantages), `adapt.iterations` iterations, its own run folder under the source run."""
    a = cfg.adapt
    out = copy.deepcopy(cfg)
    if a.target_task is not None:
        retarget_env(out, a.target_task, "adapt.target_task")
    out.mode.p, out.mode.q, out.mode.granularity = 1.0, 0.0, "iteration"
    out.memory.enabled = True
    out.intrinsic.kind = "none"
    if a.temperature is not None:
        out.rollout.temperature = a.temperature
    out.eval.val_every = 0
    out.ckpt_path = None
    out.out_dir = str(cfg.run_dir / "adapt")
    out.name = f"{a.target_task or 'same-task'}-seed{cfg.seed}"
    out.trainer = {**cfg.trainer, "max_epochs": a.iterations}
    validate(out)
    return out


def fresh_dir(path: Path) -> Path:
    """`path`, empty: an existing folder is moved aside to `path.N`, never deleted."""
    if path.exists():
        k = 1
        while path.with_name(f"{path.name}.{k}").exists():
            k += 1
        path.rename(path.with_name(f"{path.name}.{k}"))
    path.mkdir(parents=True)
    return path


def adaptation_checkpoint(acfg: Config) -> Path:
    """Where an adaptation (its `adaptation_config`) keeps the checkpoint it continues from."""
    return acfg.run_dir / "checkpoints" / "last.ckpt"


def adapt(
    cfg: Config, resume: bool = False, extra_callbacks: list[Any] | None = None,
) -> tuple[list[dict[str, float]], Path, FrozenPolicy]:
    """Run the adaptation; return its per-iteration rows, its folder, and the (unchanged) policy.
    `resume`: continue the folder's adaptation from its last checkpoint when it has one."""
    from empo2.checkpoint import checkpoint_epoch, resolve_ckpt
    from empo2.fit import build_trainer, check_stores_present, drop_checkpoints_after, write_pictures
    from empo2.plots import adaptation_curve, iteration_rows, read_rows

    ckpt = resolve_ckpt(cfg)
    acfg = adaptation_config(cfg)
    last = adaptation_checkpoint(acfg)
    resume_from = str(last) if resume and last.is_file() else None
    resume_epoch = checkpoint_epoch(resume_from)  # an unreadable checkpoint fails here, in one line
    if resume_from is None:
        run_dir = fresh_dir(acfg.run_dir)
    else:
        run_dir = acfg.run_dir
        check_stores_present(acfg, resume_from)
        drop_checkpoints_after(run_dir / "checkpoints", resume_epoch)
    (run_dir / "config.yaml").write_text(to_yaml(acfg))
    module = FrozenPolicy.from_checkpoint(acfg, ckpt)
    module.policy.requires_grad_(False)
    data = AdaptationData(acfg)
    trainer = build_trainer(acfg, run_dir, data, extra_callbacks, resume_epoch=resume_epoch,
                            checkpoint=IterationCheckpoint(last))
    try:
        trainer.fit(module, datamodule=data, ckpt_path=resume_from)
    finally:
        data.teardown("fit")
    rows: list[dict[str, float]] = []
    if trainer.global_rank == 0:
        for r in iteration_rows(read_rows(run_dir / "logs" / "metrics.csv")):
            rows.append({
                "iteration": int(float(r["iteration"])), "memory": float(r["iteration"]) > 0,
                "return": float(r["rollout/return"]), "success_rate": float(r["rollout/success_rate"]),
                "memory_entries": float(r.get("memory/entries", 0) or 0),
                "tips_per_retrieval": float(r.get("memory/tips_per_retrieval", 0) or 0),
            })
        with (run_dir / "adaptation.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        task = acfg.adapt.target_task or "the training task"
        source = Path(ckpt).name if ckpt else "base model"
        adaptation_curve([r["iteration"] for r in rows], [r["return"] for r in rows], run_dir / "adaptation.png",
                         title=f"{source} → {task}", success=[r["success_rate"] for r in rows])
        write_pictures(run_dir, acfg.name)
    return rows, run_dir, module


def summary_line(rows: list[dict[str, float]]) -> str:
    """The adaptation's verdict, saying when no tip was ever retrieved (then memory changed nothing)."""
    with_memory = [r for r in rows if r["memory"]]
    if not with_memory:
        return "no iteration with memory was played"
    if all(r["tips_per_retrieval"] == 0 for r in with_memory):
        return ("no tip was retrieved in any iteration (tips are kept per instance: instances that never repeat, "
                "or a memory.threshold no entry passes, retrieve nothing): differences between iterations are "
                "sampling noise, not memory")
    first, best = rows[0]["return"], max(r["return"] for r in with_memory)
    retrieved = sum(r["tips_per_retrieval"] for r in with_memory) / len(with_memory)
    change = f"{100 * (best - first) / abs(first):+.1f}%" if first else f"{best - first:+.2f} (iteration 0 returned 0)"
    return f"best return with memory vs iteration 0: {change}; {retrieved:.2f} tips per retrieval on average"


def parse_overrides(items: list[str]) -> list[str]:
    """`target_task=X` is short for `adapt.target_task=X`."""
    return [f"adapt.{item}" if item.startswith("target_task=") else item for item in items]


COMMAND = Command("empo2.adapt", "Adapt a policy to a new task with memory only.",
                  example="--config conf/quickstart.yaml ckpt_path=last target_task=find-here",
                  config_help="the YAML file(s) the policy was trained with",
                  overrides_help="ckpt_path=last|PATH target_task=TASK adapt.iterations=K ...")


def main(argv: list[str] | None = None) -> int:
    def run(cfg: Config) -> int:
        rows, run_dir, _ = adapt(cfg)
        if rows:
            print(f"adaptation folder: {run_dir}")
            for r in rows:
                print(f"iteration {r['iteration']:>2}  {'memory   ' if r['memory'] else 'no memory'}  "
                      f"return {r['return']:8.2f}  success {r['success_rate']:.2f}  memory entries {r['memory_entries']:.0f}  "
                      f"tips per retrieval {r['tips_per_retrieval']:.2f}")
            print(summary_line(rows))
        return 0

    return run_command(COMMAND, argv, run, rewrite=parse_overrides)

if __name__ == "__main__":
    raise SystemExit(main())
