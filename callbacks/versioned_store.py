"""Base for callbacks that own a versioned LanceDB store in the run directory.

Why one place: the tip memory and the novelty table have the same life cycle. Rank 0 creates the
store first (the others open it after a barrier); a checkpoint records the store's version, and
resuming restores exactly that version on rank 0, so writes made after the checkpoint never leak
into the resumed run; before every rollout the other ranks reload what rank 0 wrote.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from empo2 import distributed as D
from empo2.iteration_hooks import IterationCallback, RolloutContext


class VersionedStoreCallback(IterationCallback):
    state_name = "version"
    """Key of the store version in this callback's checkpoint state."""

    def __init__(self) -> None:
        self.store: Any = None
        self._restore_to: int | None = None

    def open_store(self) -> Any:
        """Open (or create) the store; it must offer `version`, `restore(v)` and `refresh()`.
        Return None when this run does not need one."""
        raise NotImplementedError

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if D.rank() == 0:
            self.store = self.open_store()
        D.barrier()
        if D.rank() != 0:
            self.store = self.open_store()
        if self._restore_to is not None:
            self._restore(self._restore_to)

    def state_dict(self) -> dict[str, Any]:
        return {self.state_name: self.store.version if self.store is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version = state.get(self.state_name)
        if version is None:
            return
        if self.store is None:
            self._restore_to = version  # applied in setup
        else:
            self._restore(version)

    def _restore(self, version: int) -> None:
        if D.rank() == 0 and self.store is not None:
            self.store.restore(version)
        self._restore_to = None

    def on_rollout_start(self, ctx: RolloutContext) -> None:
        if self.store is not None and D.world_size() > 1:
            D.barrier()
            if D.rank() != 0:
                self.store.refresh()
