"""Writes every training episode of an iteration to `trajectories/iter_XXXXX.jsonl`.

Why one file per iteration: a resumed run rewrites the iterations it replays instead of appending
duplicates, and a reader can load one iteration without scanning the whole run. Only rank 0 writes
its episodes under `rank0`; other ranks write their own file (episodes are sharded by rank).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from empo2.episode import Episode, write_jsonl


class TrajectoryWriter(L.Callback):
    def __init__(self, run_dir: str | Path) -> None:
        self.folder = Path(run_dir) / "trajectories"

    def on_rollout_scored(self, trainer: L.Trainer, pl_module: L.LightningModule, episodes: list[Episode]) -> None:
        suffix = "" if trainer.world_size == 1 else f".rank{trainer.global_rank}"
        write_jsonl(self.folder / f"iter_{trainer.current_epoch:05d}{suffix}.jsonl", episodes)
