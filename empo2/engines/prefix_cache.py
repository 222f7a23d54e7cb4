"""Reusing the key/value cache of the previous `generate` call when the next prompts extend it.

Why: an agent's prompt at turn t+1 is its prompt at turn t, the response it sampled, and the next
observation (`rollout.history_tokens: sampled`). Without reuse, HF `generate` encodes the whole
history again at every turn, so an 8-turn ScienceWorld episode pays for about four times its
tokens in prefill, and on a CPU that prefill is most of the rollout's time. vLLM has its own
prefix cache; this is the HF engine's.

How: after a call, the cache holds, per batch row, the keys and values of the prompt and of the
sampled response (all but its last token, which was never fed). The next call matches each new
prompt to the cached row sharing its longest prefix (a group's episodes share their first prompt;
a memory-mode prompt shares at least its opening), keeps that row's cached positions up to the
shared length and masks the rest, and feeds only the new tokens. Masked positions may sit in the
middle of a row: transformers derives position ids from the cumulative attention mask, so every
kept token keeps its position and every new token gets the position it has in the uncached
prompt. After the call the rows are compacted (masked positions removed, left-padded again), which
preserves those positions because each is the token's rank among the row's kept tokens.

Validity: keys and values depend on the weights, so the cache is dropped whenever a parameter was
written since it was built (every in-place write bumps a tensor's version counter: optimizer
steps, `load_state_dict`, weight syncs) and at the end of each rollout phase (`release_memory`).
Up to float round-off (the order of sums differs with padding, as between any two batch layouts),
a cached call returns what an uncached one does; tests/test_prefix_cache.py checks it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def weights_version(model: torch.nn.Module) -> int:
    """A number that changes whenever any parameter of `model` is written in place (the sum of
    the parameters' version counters, which only grow)."""
    return sum(p._version for p in model.parameters())


def shared_prefix_lengths(prompt: torch.Tensor, rows: torch.Tensor, row_lengths: torch.Tensor) -> torch.Tensor:
    """For each cached row, how many leading tokens of `prompt` it holds.

    `rows` [R, L] holds each row's kept tokens left-aligned (padding after them is never compared:
    `row_lengths` [R] bounds the count)."""
    width = min(prompt.numel(), rows.shape[1])
    if width == 0:
        return torch.zeros(rows.shape[0], dtype=torch.long)
    same = (rows[:, :width] == prompt[:width]).long()
    return torch.minimum(same.cumprod(dim=1).sum(dim=1), row_lengths)


@dataclass
class PrefixCache:
    """The key/value cache of one `generate` call, compacted: row i's kept tokens are the last
    `lengths[i]` positions (left padding before them is masked)."""

    kv: object
    """transformers `DynamicCache` ([rows, heads, positions, head_dim] per layer)."""
    tokens: torch.Tensor
    """[rows, positions]: the token id at each cached position (padding: any id)."""
    lengths: torch.Tensor
    """[rows]: kept tokens per row."""
    version: int
    """`weights_version` of the model that computed it."""

    @property
    def width(self) -> int:
        return int(self.tokens.shape[1])

    def kept_tokens(self) -> torch.Tensor:
        """[rows, width]: each row's kept tokens moved to the start (then -1), for prefix matching."""
        out = torch.full_like(self.tokens, -1)
        for i, n in enumerate(self.lengths.tolist()):
            if n:
                out[i, :n] = self.tokens[i, self.width - n:]
        return out


@dataclass
class Continuation:
    """Inputs of a `generate` call that continues from a cache."""

    input_ids: torch.Tensor
    """[B, width + suffix]: cached positions (their ids are not fed) then each prompt's new tokens, right-aligned."""
    attention_mask: torch.Tensor
    """[B, width + suffix]: 1 on kept cached positions and on new tokens."""
    kv: object
    """The cache, rows selected for this batch (a row may serve several prompts)."""
    reused: int
    """Prompt tokens taken from the cache instead of encoded."""


def plan_continuation(cache: PrefixCache, prompts: list[list[int]], pad_id: int) -> Continuation | None:
    """Match each prompt to the cached row sharing its longest prefix and build the inputs that
    feed only the rest; None when no prompt shares a token with the cache (nothing to gain)."""
    from transformers import DynamicCache

    kept = cache.kept_tokens()
    rows, shared = [], []
    for p in prompts:
        lengths = shared_prefix_lengths(torch.tensor(p, dtype=torch.long), kept, cache.lengths)
        best = int(torch.argmax(lengths))
        rows.append(best)
        shared.append(min(int(lengths[best]), len(p) - 1))  # the last prompt token is always fed: its logits start the response
    if not any(shared):
        return None
    width = cache.width
    suffix = max(len(p) - k for p, k in zip(prompts, shared))
    index = torch.tensor(rows, dtype=torch.long)
    input_ids = torch.full((len(prompts), width + suffix), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width + suffix), dtype=torch.long)
    input_ids[:, :width] = cache.tokens.index_select(0, index)
    for i, (p, k) in enumerate(zip(prompts, shared)):
        start = width - int(cache.lengths[rows[i]])
        attention[i, start:start + k] = 1  # the shared prefix; the row's other cached tokens are masked
        new = p[k:]
        input_ids[i, width + suffix - len(new):] = torch.tensor(new, dtype=torch.long)
        attention[i, width + suffix - len(new):] = 1
    kv = DynamicCache(ddp_cache_data=[(layer.keys.index_select(0, index.to(layer.keys.device)),
                                       layer.values.index_select(0, index.to(layer.values.device)))
                                      for layer in cache.kv.layers])
    return Continuation(input_ids, attention, kv, reused=sum(shared))


def reusable(kv) -> bool:
    """Whether a finished call's cache can be continued: every layer a plain full-attention
    `DynamicLayer` (a sliding-window layer has dropped positions a continuation would need)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(kv, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer and layer.keys is not None for layer in layers)


def compact(kv, tokens: torch.Tensor, keep: torch.Tensor, version: int) -> PrefixCache:
    """The cache of a finished call with only the `keep` [rows, positions] positions, each row's
    left-padded to the longest: positions keep their order, so each kept token keeps its rank
    among its row's kept tokens, which is its position id."""
    from transformers import DynamicCache

    lengths = keep.sum(dim=1)
    width = int(lengths.max()) if len(lengths) else 0
    index = torch.zeros((keep.shape[0], width), dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        if n:
            index[i, width - n:] = keep[i].nonzero().squeeze(1)
    layers = []
    for layer in kv.layers:
        k, v = layer.keys, layer.values
        gather = index.to(k.device)[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
        layers.append((torch.gather(k, 2, gather), torch.gather(v, 2, gather)))
    return PrefixCache(kv=DynamicCache(ddp_cache_data=layers), tokens=torch.gather(tokens, 1, index), lengths=lengths, version=version)
