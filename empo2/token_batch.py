"""Packing step rows into padded tensors, and the log-probs of response tokens.

Why this layout: prompts are left-padded and responses right-padded, so every response starts at
the same column P. The model then only has to project the last R+1 hidden states onto the
vocabulary (`logits_to_keep`), instead of the whole sequence: with a 49k vocabulary and prompts of
thousands of tokens, that is most of the memory of a forward pass. Rows are sorted by length before
being cut into micro-batches, which keeps padding low; the padding share is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch


@dataclass
class TokenBatch:
    input_ids: torch.Tensor
    """[rows, P + R] left-padded prompts followed by right-padded responses."""
    attention_mask: torch.Tensor
    """[rows, P + R] 1 on real tokens."""
    position_ids: torch.Tensor
    """[rows, P + R] positions counted over real tokens only."""
    response_ids: torch.Tensor
    """[rows, R] response tokens (pad where absent)."""
    response_mask: torch.Tensor
    """[rows, R] 1 on real response tokens."""

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def padded_tokens(self) -> int:
        return self.attention_mask.numel()

    def to(self, device) -> "TokenBatch":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def pack(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int) -> TokenBatch:
    """Build a `TokenBatch` from id lists (rows keep their order)."""
    p_width = max(len(p) for p in prompts)
    r_width = max(max((len(r) for r in responses), default=0), 1)
    n = len(prompts)
    ids = torch.full((n, p_width + r_width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, p_width + r_width), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, p_width - len(p):p_width] = torch.tensor(p, dtype=torch.long)
        mask[i, p_width - len(p):p_width] = 1
        if r:
            ids[i, p_width:p_width + len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, p_width:p_width + len(r)] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return TokenBatch(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        response_ids=ids[:, p_width:].clone(),
        response_mask=mask[:, p_width:].clone(),
    )


def response_logprobs(model, batch: TokenBatch, temperature: float = 1.0) -> torch.Tensor:
    """[rows, R] log π(response token | prefix) under logits / temperature (0 where masked)."""
    r_width = batch.response_ids.shape[1]
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=r_width + 1,
        use_cache=False,
    )
    logits = out.logits[:, :-1, :].float()  # positions P-1 .. P+R-2 predict the R response tokens
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)
    return logp * batch.response_mask


def micro_batches(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Row indices grouped into micro-batches of similar total length (longest first)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + size] for i in range(0, len(order), size)]
