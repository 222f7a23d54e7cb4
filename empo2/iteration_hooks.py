"""What a callback may do inside an iteration's data phase, declared in one place.

Why declared: the rollout datamodule calls callbacks at fixed points of `train_dataloader` — before
the rollout, after it (rewards may still change: tips, memory writes, the intrinsic bonus), after
advantages (episodes are final: trajectory files) — and asks them for metrics and, in memory
modes, for tips. Those points are the protocol below; a callback takes part by subclassing
`IterationCallback` and overriding what it needs. Each hook is handed a `RolloutContext` with the
collaborators of the iteration (trainer, module, rollout engine), so no callback reaches through
`trainer.datamodule` for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import lightning as L

if TYPE_CHECKING:  # typing only: the engine and episode modules import nothing from here
    from empo2.engines.base import RolloutEngine
    from empo2.episode import Episode

HOOK_NAMES = ("on_rollout_start", "on_rollout_end", "on_rollout_scored", "rollout_metrics", "retrieve_tips")


@dataclass(frozen=True)
class RolloutContext:
    """The collaborators of one iteration's data phase."""

    trainer: L.Trainer
    module: Any
    """The EMPO2Module (its `tokenizer` renders prompts)."""
    engine: "RolloutEngine"
    """The engine that played the rollout, synced to the current weights (tips are generated with it)."""
    iteration: int

    @property
    def tokenizer(self) -> Any:
        return self.module.tokenizer


@runtime_checkable
class IterationHooks(Protocol):
    """The hooks the datamodule calls, in this order, every iteration."""

    def on_rollout_start(self, ctx: RolloutContext) -> None:
        """Before the first episode is played."""

    def on_rollout_end(self, ctx: RolloutContext, episodes: list["Episode"]) -> None:
        """Every episode played; rewards may still change (advantages come next)."""

    def on_rollout_scored(self, ctx: RolloutContext, episodes: list["Episode"]) -> None:
        """Advantages and old log-probs done: the episodes are final."""

    def rollout_metrics(self) -> dict[str, float]:
        """This iteration's metrics of the callback (logged with the rollout's)."""


@runtime_checkable
class TipRetriever(Protocol):
    """What a memory-mode rollout asks for at every step (EMPO2.md §4)."""

    def retrieve_tips(self, episodes: list["Episode"]) -> list[list[str]]:
        """Tips for the current step of each episode (empty lists for tip-free episodes)."""


class IterationCallback(L.Callback):
    """A Lightning callback that takes part in iterations: every hook does nothing until overridden."""

    def on_rollout_start(self, ctx: RolloutContext) -> None:
        pass

    def on_rollout_end(self, ctx: RolloutContext, episodes: list["Episode"]) -> None:
        pass

    def on_rollout_scored(self, ctx: RolloutContext, episodes: list["Episode"]) -> None:
        pass

    def rollout_metrics(self) -> dict[str, float]:
        return {}


def iteration_hooks(callbacks: list[Any]) -> list[IterationHooks]:
    """The callbacks that take part in iterations, in the trainer's order. A callback that defines
    some of the hooks without the whole protocol would be skipped silently: it is refused instead."""
    out = []
    for cb in callbacks:
        if isinstance(cb, IterationHooks):
            out.append(cb)
            continue
        partial = [name for name in HOOK_NAMES[:4] if callable(getattr(cb, name, None))]
        if partial:
            raise TypeError(f"callback {type(cb).__name__} defines {', '.join(partial)} but not the whole "
                            "iteration protocol: subclass empo2.iteration_hooks.IterationCallback")
    return out
