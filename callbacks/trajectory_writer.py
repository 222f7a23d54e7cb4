"""Writes every training episode of an iteration to `trajectories/iter_XXXXX.jsonl`.

Why one file per iteration: a resumed run rewrites the iterations it replays instead of appending
duplicates, and a reader can load one iteration without scanning the whole run. Only rank 0 writes
its episodes under `rank0`; other ranks write their own file (episodes are sharded by rank).
"""

from __future__ import annotations

from pathlib import Path

from empo2.episode import Episode, write_jsonl
from empo2.iteration_hooks import IterationCallback, RolloutContext


class TrajectoryWriter(IterationCallback):
    def __init__(self, run_dir: str | Path) -> None:
        self.folder = Path(run_dir) / "trajectories"

    def on_rollout_scored(self, ctx: RolloutContext, episodes: list[Episode]) -> None:
        trainer = ctx.trainer
        suffix = "" if trainer.world_size == 1 else f".rank{trainer.global_rank}"
        write_jsonl(self.folder / f"iter_{ctx.iteration:05d}{suffix}.jsonl", episodes)
