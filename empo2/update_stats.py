"""One iteration's update statistics: what each rank counts, and how ranks add up.

Why a typed record: the update loop adds to these on every micro-batch, the metrics divide them at
the end, and several ranks must be combined in between. Each field says whether it is this rank's
share of a sum (most: token counts, clipped tokens, ratio sums, this rank's part of the token-mean
loss) or a value every rank holds alike or whose run-wide value is the largest rank's (optimizer
steps, the norm of the summed gradient, the token count over all ranks, the largest ratio, wall
time). Dividing before combining was a bug: a rank without rows voted 0 into the mean ratio, and
each rank's part of the loss was averaged instead of added.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class UpdateStats:
    # alike on every rank, or the largest rank's
    steps: int = 0
    """Optimizer steps taken (ranks step together)."""
    grad_norm_sum: float = 0.0
    """Sum over steps of the gradient norm before clipping (of the gradient summed over ranks)."""
    counted_tokens: float = 0.0
    """Sum over steps of the tokens the token-mean loss divides by, over all ranks."""
    ratio_max: float = 0.0
    """Largest importance ratio seen."""
    update_s: float = 0.0
    """Seconds in the update (the slowest rank's, once combined)."""
    # this rank's shares
    loss_sum: float = 0.0
    """Sum over steps of this rank's part of the token-mean loss."""
    clipped: float = 0.0
    dual_clipped: float = 0.0
    ratio_sum: float = 0.0
    masked_tokens: float = 0.0
    """Response tokens removed from the loss (low-probability masking)."""
    response_tokens: float = 0.0
    kl_sum: float = 0.0
    kl_tokens: float = 0.0
    real_tokens: float = 0.0
    """Tokens of the forwards, padding excluded."""
    padded_tokens: float = 0.0
    """Tokens of the forwards, padding included."""

    SHARED = frozenset({"steps", "grad_norm_sum", "counted_tokens", "ratio_max", "update_s"})

    @classmethod
    def combine(cls, per_rank: list["UpdateStats"]) -> "UpdateStats":
        """All ranks' statistics together: shares summed, the rest the largest rank's."""
        return cls(**{f.name: (max if f.name in cls.SHARED else sum)(getattr(r, f.name) for r in per_rank)
                      for f in fields(cls)})

    def metrics(self) -> dict[str, float]:
        """The `train/*` metrics (and `time/update_s`) these statistics give."""
        steps = max(self.steps, 1)
        tokens = max(self.counted_tokens, 1)
        return {
            "train/loss": self.loss_sum / steps,
            "train/grad_norm": self.grad_norm_sum / steps,
            "train/clip_frac": self.clipped / tokens,
            "train/dual_clip_frac": self.dual_clipped / tokens,
            "train/ratio_mean": self.ratio_sum / tokens,
            "train/ratio_max": self.ratio_max,
            "train/optimizer_steps": self.steps,
            "train/masked_token_frac": self.masked_tokens / max(self.response_tokens, 1),
            "train/kl": self.kl_sum / max(self.kl_tokens, 1),
            "train/trained_tokens_per_s": self.real_tokens / max(self.update_s, 1e-9),
            "train/padding_share": 1.0 - self.real_tokens / max(self.padded_tokens, 1),
            "time/update_s": self.update_s,
        }

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
