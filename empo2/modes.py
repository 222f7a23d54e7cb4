"""The rules that make an iteration EMPO² rather than plain GRPO, as pure functions.

Why one module: EMPO²'s own choices — which mode an iteration runs in (EMPO2.md §2), which prompt
each log-probability is taken on in that mode (§6.3), which tokens of an off-policy row count
(§6.4), and the exploration bonus (§5) — are small rules that used to sit inside the datamodule,
the LightningModule and a callback. Here each is a named function of plain values: the datamodule
and callbacks call them, and their tests need no trainer, model or environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable, Sequence


class Mode(str, Enum):
    """The three EMPO² modes (EMPO2.md §2). A `str`: it is stored and logged as its value."""

    ON_POLICY = "on_policy"
    """No tips anywhere: plain GRPO."""
    ON_POLICY_MEMORY = "on_policy_memory"
    """Rollouts with retrieved tips, trained on the tip-conditioned prompts they were sampled with."""
    OFF_POLICY = "off_policy"
    """Rollouts with retrieved tips, trained on the same conversations with the tips removed."""

    def __str__(self) -> str:
        return self.value

    @property
    def uses_memory(self) -> bool:
        """Rollouts of this mode retrieve tips (and write their episodes' tips to memory)."""
        return self is not Mode.ON_POLICY


def mode_of_draw(u: float, p: float, q: float) -> Mode:
    """EMPO2.md §2 for one uniform draw u ∈ [0, 1): off_policy when u < p·q, on_policy_memory when
    p·q ≤ u < p, on_policy otherwise — probabilities p·q, p·(1−q) and 1−p."""
    return Mode.OFF_POLICY if u < p * q else Mode.ON_POLICY_MEMORY if u < p else Mode.ON_POLICY


def sample_modes(draw: Callable[[], float], p: float, q: float, granularity: str, n_groups: int) -> list[Mode]:
    """EMPO2.md §2: the mode of each of `n_groups` groups, drawn once for the whole iteration
    (`granularity="iteration"`, the paper) or once per group (`"group"`). `draw` returns the next
    uniform number of the caller's generator, so the sequence of draws is the caller's."""
    if granularity == "iteration":
        return [mode_of_draw(draw(), p, q)] * n_groups
    return [mode_of_draw(draw(), p, q) for _ in range(n_groups)]


@dataclass(frozen=True)
class UpdatePrompts:
    train: list[int]
    """Prompt on which log π_θ is taken (the update's input)."""
    old: list[int]
    """Prompt on which log π_old is taken."""
    masked: bool
    """Low-probability masking (EMPO2.md §6.4) applies to this row."""
    old_is_rollout: bool
    """`old` is the rollout prompt itself."""


def update_prompts(mode: Mode | str, rollout_prompt: list[int], tipfree_prompt: list[int], *, mask_level: str,
                   mask_apply_to: str, old_logprob: str) -> UpdatePrompts:
    """The three EMPO² update modes (EMPO2.md §6.3), one branch each.

    `rollout_prompt` is the prompt the action was sampled with (tips included in memory modes);
    `tipfree_prompt` is the same conversation re-rendered without any tips. `mask_level`,
    `mask_apply_to` are `mask.level` / `mask.apply_to`; `old_logprob` is `offpolicy.old_logprob`."""
    mode = Mode(mode)
    masked_everywhere = mask_level != "none" and mask_apply_to == "all"
    if mode is not Mode.OFF_POLICY:  # on-policy, with or without tips: train exactly the prompt sampled
        return UpdatePrompts(rollout_prompt, rollout_prompt, masked_everywhere, True)
    # off-policy: distil, training the tip-free prompt on actions sampled with tips
    with_tips = old_logprob == "with_tips"
    return UpdatePrompts(tipfree_prompt, rollout_prompt if with_tips else tipfree_prompt, mask_level != "none", with_tips)


def low_probability_keep(tipfree_logprobs: Sequence[float], log_delta: float, level: str) -> list[float]:
    """EMPO2.md §6.4, low-probability masking: a response token counts (1.0) when its log-prob under
    the tip-free policy is at least log δ; `level="step"` drops the whole step when any token is below."""
    keep = [float(lp >= log_delta) for lp in tipfree_logprobs]
    if level == "step" and keep and min(keep) == 0.0:
        return [0.0] * len(keep)
    return keep


def novelty_bonus(similar_states: int, coef: float) -> float:
    """EMPO2.md §5, r_int = coef / n_t, where n_t ≥ 1 counts the state itself and the stored states
    of its slot similar to it (the novelty table's count)."""
    if similar_states < 1:
        raise ValueError(f"n_t counts the state itself, so it is at least 1 (got {similar_states})")
    return coef / similar_states


def retrieval_count_bonus(retrieved: int, coef: float, uses_memory: bool) -> float:
    """The code release's variant of §5: coef / (k + 1) for a step whose prompt retrieved k tips, in
    memory modes only (0 in a tip-free rollout)."""
    return coef / (retrieved + 1) if uses_memory else 0.0
