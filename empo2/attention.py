"""Attention for grouped-query models on CPU under a padding mask, without copying the cache.

Why: the embedded model (and most current ones) shares each key/value head among several query
heads. transformers' `sdpa` attention hands PyTorch the shared heads only when there is no mask;
with one (every padded batch: left-padded rollout and tip prompts, padded micro-batches) it first
copies the keys and values once per query head (`repeat_kv`). At a decode step that copy is the
whole cache, every layer, every step: on the KeyRoom protocol's tip writing (32 rows, ~850 cached
tokens) it made a decode step 4.5x a plain one (docs/BENCHMARKS.md, "Rollout anatomy"). PyTorch's
CPU attention kernel takes the shared heads and a mask together (`enable_gqa=True`), with the same
forward result to the bit in float32 (tests/test_attention.py).

So the models are loaded with `attn_implementation="empo2_sdpa"`: on CPU, a masked call over
grouped heads goes to the kernel directly; every other call (no mask, one key/value head per query
head, GPU, where a masked grouped call would leave the fused kernels) is transformers' own `sdpa`.
The mask is built exactly as for `sdpa`.
"""

from __future__ import annotations

import torch

NAME = "empo2_sdpa"
"""The `attn_implementation` name the models are loaded with."""


def grouped_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                 is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: query [B, heads, Q, D], key/value [B, kv_heads, K, D],
    a boolean mask [B, 1, Q, K] or None; returns [B, Q, heads, D]."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    if attention_mask is None or groups == 1 or query.device.type != "cpu" or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Make `NAME` known to transformers (idempotent); returns it."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(NAME, grouped_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
