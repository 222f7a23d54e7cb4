"""IntrinsicReward: adds a novelty bonus to step rewards before advantages (EMPO2.md §5).

Why it matters: when all N returns of a group are equal (all 0, say), GRPO's advantage is zero and
nothing is learned; the bonus still ranks the episodes that reached new states higher. Kinds:
- `novelty` (default): per slot, a table of state embeddings (the observation after each step);
  n_t = 1 + #stored states with cosine > τ; the state is stored when n_t = 1; r_int = coef / n_t;
- `retrieval_count` (the official code): r_int = coef / (k + 1), k = tips retrieved at that step,
  memory modes only;
- `none`.
The bonus is added to the step's `intrinsic` field (the advantage uses extrinsic + intrinsic) and
logged apart from the extrinsic return.

Multi-rank: states are gathered from all ranks in rank order; every rank scores the same sequence
against the same table, so all ranks see the same table; rank 0 alone writes it to disk.
"""

from __future__ import annotations

import time
from pathlib import Path

from empo2 import distributed as D
from empo2.config import Config
from empo2.embedder import shared_embedder
from empo2.episode import Episode
from empo2.iteration_hooks import RolloutContext
from empo2.memory import memory_dir
from empo2.modes import novelty_bonus, retrieval_count_bonus
from empo2.novelty import NoveltyTable

from callbacks.versioned_store import VersionedStoreCallback


class IntrinsicReward(VersionedStoreCallback):
    state_name = "novelty_version"

    def __init__(self, cfg: Config, run_dir: str | Path) -> None:
        super().__init__()
        self.cfg = cfg
        self.folder = memory_dir(run_dir)
        self.elapsed = 0.0

    def open_store(self) -> NoveltyTable | None:
        if self.cfg.intrinsic.kind != "novelty":
            return None
        self.embedder = shared_embedder("cpu", self.cfg.memory.embed_batch_size)
        return NoveltyTable(self.folder, self.cfg.intrinsic.threshold)

    def on_rollout_end(self, ctx: RolloutContext, episodes: list[Episode]) -> None:
        t0 = time.perf_counter()
        coef = self.cfg.intrinsic.coef
        kind = self.cfg.intrinsic.kind
        if kind == "retrieval_count":
            for ep in episodes:
                for step in ep.steps:
                    step.intrinsic = retrieval_count_bonus(step.retrieved, coef, ep.uses_memory)
        elif kind == "novelty":
            assert self.store is not None
            mine = [(ep.instance, step.observation) for ep in episodes for step in ep.steps]
            gathered = D.gather_objects(mine)
            everything = [item for part in gathered for item in part]
            keys = self.embedder.encode([obs for _, obs in everything])
            counts = self.store.count([slot for slot, _ in everything], keys, write=D.rank() == 0)
            offset = sum(len(part) for part in gathered[: D.rank()])
            it = iter(counts[offset: offset + len(mine)])
            for ep in episodes:
                for step in ep.steps:
                    step.intrinsic = novelty_bonus(next(it), coef)
        self.elapsed = time.perf_counter() - t0

    def rollout_metrics(self) -> dict[str, float]:
        out = {"time/intrinsic_s": self.elapsed}
        if self.store is not None:
            out["memory/novelty_states"] = float(sum(self.store.counts().values()))
        return out
