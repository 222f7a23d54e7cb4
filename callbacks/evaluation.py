"""Evaluates the policy every `eval.val_every` iterations during fit (EMPO2.md §8 protocol).

Why a callback and not Lightning's validation loop: an evaluation here is a batch of rollouts, not
a pass over a dataset, and it needs what the training rollout already holds: the environment pool
(ScienceWorld JVMs are reused, not restarted) and the engine with the current weights. It logs
`val/return`, `val/score`, `val/success_rate` through the trainer's loggers and writes the per-task
table to `<run>/eval/val-iter_XXXXX.{csv,md}` (rank 0). Its seed is a function of the run's seed and
the iteration, so a resumed run evaluates exactly as an uninterrupted one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L

from empo2.config import Config
from empo2.evaluate import evaluate_policy, table_metrics, write_table

if TYPE_CHECKING:
    from datamodules import RolloutDataModule


class PeriodicEvaluation(L.Callback):
    def __init__(self, cfg: Config, run_dir: str | Path, rollouts: "RolloutDataModule") -> None:
        self.cfg = cfg
        self.rollouts = rollouts
        """The run's rollout datamodule: its environment pool and engine are reused here."""
        self.folder = Path(run_dir) / "eval"

    def due(self, iteration: int) -> bool:
        every = self.cfg.eval.val_every
        return every > 0 and (iteration + 1) % every == 0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        iteration = trainer.current_epoch
        if not self.due(iteration):
            return
        t0 = time.perf_counter()
        dm = self.rollouts
        engine = dm.engine_for(pl_module)
        engine.sync_weights()
        rows, _ = evaluate_policy(
            self.cfg, dm.pool, engine, pl_module.tokenizer, seed=self.cfg.seed * 1_000_003 + 7919 * (iteration + 1),
            progress=self.cfg.logging.progress_bar and trainer.global_rank == 0,
        )
        engine.release_memory()
        if trainer.global_rank == 0:
            write_table(rows, self.folder, f"val-iter_{iteration:05d}")
        metrics = table_metrics(rows) | {"time/eval_s": time.perf_counter() - t0}
        pl_module.log_dict(metrics, on_step=False, on_epoch=True)
