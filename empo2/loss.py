"""Policy losses (EMPO2.md §6.2), registered by name.

Why token-mean: every response token in a mini-batch counts once, whatever its row's length, which
is what the paper's and verl's default aggregation does. The function returns the *sum* over the
given tokens plus the statistics, so a mini-batch split into micro-batches can divide by the
mini-batch's token count once and get exactly the same loss as one big batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from empo2.registry import Registry


@dataclass
class LossTerms:
    loss_sum: torch.Tensor
    """Sum of per-token losses over unmasked tokens (divide by the mini-batch token count)."""
    clipped: torch.Tensor
    """Number of tokens where the PPO clip was active."""
    dual_clipped: torch.Tensor
    """Number of tokens where the dual clip was active."""
    ratio_sum: torch.Tensor
    """Sum of importance ratios over unmasked tokens."""
    ratio_max: torch.Tensor
    """Largest ratio among unmasked tokens."""


def token_mean_scale(counted_tokens: float, ranks_averaged: float = 1.0) -> float:
    """EMPO2.md §6.2, token-mean aggregation: the factor that turns a micro-batch's loss *sum* into
    its share of the mean over every counted token of the mini-batch, on all ranks together
    (`counted_tokens`: response tokens not removed by low-probability masking, summed over ranks).
    `ranks_averaged` undoes a strategy that averages gradients over ranks (FSDP: the world size),
    so the summed gradient is that of one mean over the union of the ranks' tokens."""
    return ranks_averaged / max(counted_tokens, 1)


LossFn = Callable[..., LossTerms]
LOSSES: Registry[LossFn] = Registry("policy loss")


@LOSSES.register("dual_clip_ppo")
def dual_clip_ppo(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.3,
    dual_clip: float = 10.0,
    log_ratio_clamp: float = 20.0,
) -> LossTerms:
    """EMPO2.md §6.2, per token:
    ratio = exp(clamp(logp − logp_old, −20, 20));
    L = max(−A·ratio, −A·clip(ratio, 1−ε_low, 1+ε_high)); if A < 0: L = min(L, −c·A).

    All tensors are [rows, tokens]; `advantages` broadcasts from [rows, 1]; `mask` is 1 for tokens
    that count (response tokens not removed by low-probability masking).
    """
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype).expand_as(logp)
    ratio = torch.exp(torch.clamp(logp - logp_old, -log_ratio_clamp, log_ratio_clamp))
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    cap = -dual_clip * adv
    negative = adv < 0
    dual_active = negative & (loss > cap)
    loss = torch.where(negative, torch.minimum(loss, cap), loss)
    clip_active = (clipped > unclipped) & ~dual_active
    with torch.no_grad():
        ratio_max = (ratio.detach() * mask).max() if mask.any() else ratio.new_zeros(())
    return LossTerms(
        loss_sum=(loss * mask).sum(),
        clipped=(clip_active.to(mask.dtype) * mask).sum().detach(),
        dual_clipped=(dual_active.to(mask.dtype) * mask).sum().detach(),
        ratio_sum=(ratio.detach() * mask).sum(),
        ratio_max=ratio_max,
    )


# ---------------------------------------------------------------------------- KL to the reference
# (log π_θ, log π_ref) per token -> KL estimate per token
KLFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
KL_ESTIMATORS: Registry[KLFn] = Registry("KL estimator")


@KL_ESTIMATORS.register("k1")
def kl_k1(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """k1 = log π_θ − log π_ref (unbiased, high variance, can be negative per token)."""
    return logp - ref


@KL_ESTIMATORS.register("k2")
def kl_k2(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """k2 = ½ (log π_θ − log π_ref)²."""
    return 0.5 * (logp - ref) ** 2


@KL_ESTIMATORS.register("low_var_kl")
def kl_k3(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """k3 = exp(log π_ref − log π_θ) − (log π_ref − log π_θ) − 1, clamped to [−10, 10]: non-negative,
    unbiased for KL(π_θ ‖ π_ref) under samples from π_θ, low variance (the GRPO paper's estimator)."""
    d = torch.clamp(ref - logp, -20.0, 20.0)
    return torch.clamp(torch.exp(d) - d - 1.0, -10.0, 10.0)
