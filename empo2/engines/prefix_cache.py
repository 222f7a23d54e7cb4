"""Reusing the key/value cache of the previous `generate` call when the next prompts extend it.

Why: an agent's prompt at turn t+1 is its prompt at turn t, the response it sampled, and the next
observation (`rollout.history_tokens: sampled`). Without reuse, HF `generate` encodes the whole
history again at every turn, so an 8-turn ScienceWorld episode pays for about four times its
tokens in prefill, and on a CPU that prefill is most of the rollout's time. vLLM has its own
prefix cache; this is the HF engine's.

How: after a call, the cache holds, per batch row, the keys and values of the prompt and of the
sampled response (all but its last token, which was never fed). The next call matches each new
prompt to the cached row sharing its longest prefix (a group's episodes share their first prompt;
a memory-mode prompt shares at least its opening), gathers that row's keys and values of the
shared prefix (right-aligned, left-padded to the longest shared prefix of the call), and feeds only
the new tokens. transformers derives position ids from the cumulative attention mask, so every
cached token keeps its position and every new token gets the position it has in the uncached
prompt. After the call the rows are compacted (masked positions, such as the sampled tokens after
a stop, removed; left-padded again), which preserves those positions because each is the token's
rank among the row's kept tokens.

Finished episodes: rows the next call does not continue whole (their episode ended, or a new
episode shares only their opening) stay in the cache, up to `max_batch_size` rows, newest first; a
row a call continued whole is dropped (the call's own row holds it and more). So when the episodes
end, the cache still holds each one's last prompt and response, and the tip-writing call that
follows (the episode, its final observation and a request) encodes only the part after them, not
the whole episode again. A call's rows are cut to the widest row it uses, so kept rows of long
finished episodes do not widen the batches of short ones.

Shared openings: before a call, what several of its prompts share beyond the cache (a group's N
identical first prompts; the instruction all instances open with) is encoded once into rows of its
own, which the call's prompts then continue (each row forked as `index_select` picks it N times).

Validity: keys and values depend on the weights, so the cache is dropped whenever a parameter was
written since it was built (every in-place write bumps a tensor's version counter: optimizer
steps, `load_state_dict`, weight syncs) and at the end of each rollout phase (`release_memory`).
Up to float round-off (the order of sums differs with padding, as between any two batch layouts),
a cached call returns what an uncached one does; tests/test_prefix_cache.py checks it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from empo2.engines.roomy_cache import RoomyLayer, roomy_cache


MIN_SHARED_TOKENS = 8
"""A shared span shorter than this is not worth a forward of its own (a forward's fixed cost on a
CPU is that of encoding a few tokens)."""


def common_prefix_length(prompts: list[list[int]]) -> int:
    """How many leading tokens all `prompts` share."""
    shortest = min(len(p) for p in prompts)
    for i in range(shortest):
        if any(p[i] != prompts[0][i] for p in prompts):
            return i
    return shortest


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
    """transformers `DynamicCache` of `RoomyLayer`s ([rows, heads, positions, head_dim] per layer)."""
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
    """[B, width + suffix]: each prompt's cached prefix (its ids are not fed), then its new tokens, both right-aligned."""
    attention_mask: torch.Tensor
    """[B, width + suffix]: 1 on the cached prefix and on the new tokens."""
    kv: object
    """Each prompt's cached prefix, gathered from its row (a row may serve several prompts)."""
    reused: int
    """Prompt tokens taken from the cache instead of encoded."""
    extended: list[int]
    """Cache rows some prompt continues whole (the call's own row will hold all of it)."""


def best_rows(cache: PrefixCache, prompts: list[list[int]]) -> tuple[list[int], list[int]]:
    """Per prompt, the cached row sharing its longest prefix, and how many tokens that is."""
    kept = cache.kept_tokens()
    rows, held = [], []
    for p in prompts:
        lengths = shared_prefix_lengths(torch.tensor(p, dtype=torch.long), kept, cache.lengths)
        best = int(torch.argmax(lengths))
        rows.append(best)
        held.append(int(lengths[best]))
    return rows, held


def plan_continuation(cache: PrefixCache, prompts: list[list[int]], pad_id: int) -> Continuation | None:
    """Match each prompt to the cached row sharing its longest prefix and build the inputs that
    feed only the rest; None when no prompt shares a token with the cache (nothing to gain)."""
    rows, held = best_rows(cache, prompts)
    shared = [min(k, len(p) - 1) for p, k in zip(prompts, held)]  # the last prompt token is always fed: its logits start the response
    if not any(shared):
        return None
    width = max(shared)  # each prompt's shared prefix alone is gathered, right-aligned: no masked cached positions
    suffix = max(len(p) - k for p, k in zip(prompts, shared))
    row_index = torch.tensor(rows, dtype=torch.long)
    positions = torch.zeros((len(prompts), width), dtype=torch.long)
    input_ids = torch.full((len(prompts), width + suffix), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width + suffix), dtype=torch.long)
    for i, (p, k) in enumerate(zip(prompts, shared)):
        start = cache.width - int(cache.lengths[rows[i]])  # the row's first kept position
        positions[i, width - k:] = torch.arange(start, start + k)
        input_ids[i, width - k:width] = cache.tokens[rows[i], start:start + k]
        attention[i, width - k:width] = 1
        new = p[k:]
        input_ids[i, width + suffix - len(new):] = torch.tensor(new, dtype=torch.long)
        attention[i, width + suffix - len(new):] = 1

    def pick(x: torch.Tensor) -> torch.Tensor:  # [rows, heads, positions, dim] -> [prompts, heads, width, dim]
        return x[row_index.to(x.device)[:, None], :, positions.to(x.device)].transpose(1, 2)

    kv = roomy_cache([(pick(layer.keys), pick(layer.values)) for layer in cache.kv.layers])
    extended = sorted({r for r, k in zip(rows, shared) if k == int(cache.lengths[r])})
    return Continuation(input_ids, attention, kv, reused=sum(shared), extended=extended)


def cut_left(cache: PrefixCache, start: int) -> PrefixCache:
    """The cache without its first `start` positions (padding of every row)."""
    if start <= 0:
        return cache
    layers = [(layer.keys[:, :, start:], layer.values[:, :, start:]) for layer in cache.kv.layers]
    return PrefixCache(roomy_cache(layers), cache.tokens[:, start:], cache.lengths, cache.version)


def keep_rows(cache: PrefixCache, rows: list[int]) -> PrefixCache:
    """The cache with only `rows`, in that order, cut to the widest of them."""
    index = torch.tensor(rows, dtype=torch.long)
    layers = [(layer.keys.index_select(0, index.to(layer.keys.device)),
               layer.values.index_select(0, index.to(layer.values.device))) for layer in cache.kv.layers]
    lengths = cache.lengths.index_select(0, index)
    picked = PrefixCache(roomy_cache(layers), cache.tokens.index_select(0, index), lengths, cache.version)
    return cut_left(picked, picked.width - int(lengths.max()) if rows else 0)


def stack(first: PrefixCache, second: PrefixCache) -> PrefixCache:
    """Both caches' rows in one (first's, then second's), left-padded to the wider."""
    width = max(first.width, second.width)

    def padded(x: torch.Tensor, dim: int, fill: int = 0) -> torch.Tensor:
        missing = width - x.shape[dim]
        if not missing:
            return x
        shape = list(x.shape)
        shape[dim] = missing
        return torch.cat([torch.full(shape, fill, dtype=x.dtype, device=x.device), x], dim=dim)

    layers = [(torch.cat([padded(a.keys, 2), padded(b.keys, 2)]), torch.cat([padded(a.values, 2), padded(b.values, 2)]))
              for a, b in zip(first.kv.layers, second.kv.layers)]
    tokens = torch.cat([padded(first.tokens, 1), padded(second.tokens, 1)])
    return PrefixCache(roomy_cache(layers), tokens, torch.cat([first.lengths, second.lengths]),
                       second.version)


def carry_over(previous: PrefixCache | None, extended: list[int], new: PrefixCache | None, limit: int) -> PrefixCache | None:
    """The cache after a call: the call's rows (`new`) and, before them, the rows of `previous` that
    it did not continue whole, the newest (last) of them while the total stays within `limit` rows."""
    if previous is None or new is None or previous.version != new.version:
        return new
    room = limit - int(new.lengths.numel())
    unused = [i for i in range(int(previous.lengths.numel())) if i not in set(extended) and int(previous.lengths[i]) > 0]
    unused = unused[max(len(unused) - room, 0):] if room > 0 else []
    return stack(keep_rows(previous, unused), new) if unused else new


def reusable(kv) -> bool:
    """Whether a finished call's cache can be continued: every layer a plain full-attention
    `DynamicLayer` (a sliding-window layer has dropped positions a continuation would need)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(kv, "layers", None)
    return bool(layers) and all(type(layer) in (DynamicLayer, RoomyLayer) and layer.keys is not None for layer in layers)


def compact(kv, tokens: torch.Tensor, keep: torch.Tensor, version: int) -> PrefixCache:
    """The cache of a finished call with only the `keep` [rows, positions] positions, each row's
    left-padded to the longest: positions keep their order, so each kept token keeps its rank
    among its row's kept tokens, which is its position id."""
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
    return PrefixCache(kv=roomy_cache(layers), tokens=torch.gather(tokens, 1, index), lengths=lengths, version=version)
