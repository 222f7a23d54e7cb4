"""Packing step rows into tensors, cutting them into micro-batches by a token budget, and the
log-probs of response tokens.

Why a token budget: the activations a backward pass keeps grow with the tokens of a micro-batch
(about 2 MB per token for the embedded 135M model in fp32, measured in bench/peak_memory.py), not
with its row count. Cutting micro-batches by rows made peak memory a function of how long prompts
happened to be (8 rows × 1,000 tokens held ~20 GB); cutting by tokens bounds it by configuration.
The row cap stays as an upper bound.

Two layouts, one result:
- **padded**: prompts left-padded, responses right-padded, so every response starts at the same
  column P and the model projects only the last R+1 hidden states onto the vocabulary
  (`logits_to_keep`). Rows sorted by length keep padding low; the padding share is reported.
- **packed**: the rows of a micro-batch concatenated into one sequence with positions restarting at
  0 for each row and no attention mask. transformers turns restarting positions into separate
  sequences: variable-length kernels under flash attention (no padding, no score matrix), a
  block-diagonal causal mask under sdpa/eager. Only the positions that predict response tokens
  are projected onto the vocabulary (`logits_to_keep` as an index tensor).
Both return log-probs as [rows, R] (zero where absent), so the loss never sees the layout.

Shared sequences (`empo2.training_rows`): one sequence may hold several response spans (an
episode's steps); each span is one row of the result. They use the packed layout, whose logit index
picks exactly the positions that predict response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional, Sequence

import torch

LAYOUTS = ("padded", "packed")


@dataclass
class TokenBatch:
    input_ids: torch.Tensor
    """padded: [rows, P + R] left-padded prompts followed by right-padded responses;
    packed: [1, T] every row's prompt and response, one after another."""
    attention_mask: Optional[torch.Tensor]
    """padded: [rows, P + R] 1 on real tokens; packed: None (positions separate the rows)."""
    position_ids: torch.Tensor
    """Positions counted from 0 within each row, same shape as `input_ids`."""
    response_ids: torch.Tensor
    """[rows, R] response tokens (pad where absent)."""
    response_mask: torch.Tensor
    """[rows, R] 1 on real response tokens."""
    logit_index: Optional[torch.Tensor] = None
    """packed: [K] positions of `input_ids[0]` whose logits predict a response token, in row order
    (K = all response tokens); padded: None."""

    @property
    def packed(self) -> bool:
        return self.logit_index is not None

    @property
    def real_tokens(self) -> int:
        return self.input_ids.numel() if self.attention_mask is None else int(self.attention_mask.sum())

    @property
    def padded_tokens(self) -> int:
        return self.input_ids.numel()

    def to(self, device) -> "TokenBatch":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{k: v.to(device) for k, v in moved.items() if v is not None})


def _responses(responses: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    r_width = max(max((len(r) for r in responses), default=0), 1)
    ids = torch.full((len(responses), r_width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(responses), r_width), dtype=torch.long)
    for i, r in enumerate(responses):
        if r:
            ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, :len(r)] = 1
    return ids, mask


def pack(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int) -> TokenBatch:
    """Padded layout (rows keep their order)."""
    p_width = max(len(p) for p in prompts)
    response_ids, response_mask = _responses(responses, pad_id)
    n, r_width = response_ids.shape
    ids = torch.full((n, p_width + r_width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, p_width + r_width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, p_width - len(p):p_width] = torch.tensor(p, dtype=torch.long)
        mask[i, p_width - len(p):p_width] = 1
    ids[:, p_width:] = response_ids
    mask[:, p_width:] = response_mask
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return TokenBatch(ids, mask, positions, response_ids, response_mask)


def pack_flat(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int) -> TokenBatch:
    """Packed layout: one sequence, positions restarting per row, no padding (rows keep their order).
    Every prompt must be non-empty (the token before a response predicts its first token)."""
    if any(not p for p in prompts):
        raise ValueError("pack_flat: every row needs a prompt of at least one token")
    return pack_spans([list(p) + list(r) for p, r in zip(prompts, responses)],
                      [[(len(p), len(r))] for p, r in zip(prompts, responses)], pad_id)


def pack_spans(sequences: Sequence[Sequence[int]], spans: Sequence[Sequence[tuple[int, int]]], pad_id: int) -> TokenBatch:
    """Packed layout of shared sequences: each sequence holds one or more response spans
    (start, length), and every span becomes one row of `response_ids` (sequence by sequence, spans
    in order). A span's log-probs are those of its own prefix + response: causal attention lets a
    position see only what precedes it in its own sequence."""
    flat_spans = [(k, start, length) for k, seq_spans in enumerate(spans) for start, length in seq_spans]
    if any(start < 1 or start + length > len(sequences[k]) for k, start, length in flat_spans):
        raise ValueError("pack_spans: a span must start after the first token and end inside its sequence")
    response_ids, response_mask = _responses([list(sequences[k][s:s + n]) for k, s, n in flat_spans], pad_id)
    ids: list[int] = []
    positions: list[int] = []
    index: list[int] = []
    offsets = []
    for seq in sequences:
        offsets.append(len(ids))
        ids += list(seq)
        positions += range(len(seq))
    for k, start, length in flat_spans:
        index += range(offsets[k] + start - 1, offsets[k] + start - 1 + length)
    return TokenBatch(
        input_ids=torch.tensor([ids], dtype=torch.long),
        attention_mask=None,
        position_ids=torch.tensor([positions], dtype=torch.long),
        response_ids=response_ids,
        response_mask=response_mask,
        logit_index=torch.tensor(index, dtype=torch.long),
    )


def build_batch(layout: str, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int) -> TokenBatch:
    """The batch of `layout` ("padded" or "packed")."""
    if layout == "packed":
        return pack_flat(prompts, responses, pad_id)
    if layout == "padded":
        return pack(prompts, responses, pad_id)
    raise ValueError(f"unknown token layout {layout!r}; use one of {LAYOUTS}")


def build_span_batch(layout: str, sequences: Sequence[Sequence[int]], spans: Sequence[Sequence[tuple[int, int]]],
                     pad_id: int) -> TokenBatch:
    """The batch of sequences with response spans: `layout` where every sequence is one prompt +
    one response (a per-step row), else packed (several spans per sequence need arbitrary logit
    positions, which only the packed layout selects without projecting every position)."""
    single = all(len(sp) == 1 and sp[0][0] + sp[0][1] == len(seq) for seq, sp in zip(sequences, spans))
    if single and layout != "packed":
        return build_batch(layout, [seq[:sp[0][0]] for seq, sp in zip(sequences, spans)],
                           [seq[sp[0][0]:] for seq, sp in zip(sequences, spans)], pad_id)
    return pack_spans(sequences, spans, pad_id)


def response_logprobs(model, batch: TokenBatch, temperature: float = 1.0) -> torch.Tensor:
    """[rows, R] log π(response token | prefix) under logits / temperature (0 where masked)."""
    if batch.packed:
        out = model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                    logits_to_keep=batch.logit_index, use_cache=False)
        logits = out.logits[0].float()  # [K, vocab], one per response token in row order
        targets = batch.response_ids[batch.response_mask.bool()]
    else:
        r_width = batch.response_ids.shape[1]
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                    logits_to_keep=r_width + 1, use_cache=False)
        logits = out.logits[:, :-1, :].float()  # positions P-1 .. P+R-2 predict the R response tokens
        targets = batch.response_ids
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if batch.packed:  # back to [rows, R]: row-major order of the mask is the packing order
        full = logp.new_zeros(batch.response_mask.shape)
        full[batch.response_mask.bool()] = logp
        return full
    return logp * batch.response_mask


def micro_batches(
    prompt_lengths: Sequence[int], response_lengths: Sequence[int], max_rows: int, max_tokens: int,
    layout: str = "padded",
) -> list[list[int]]:
    """Row indices cut into micro-batches of at most `max_rows` rows and `max_tokens` tokens as the
    forward sees them (padded: rows × (longest prompt + longest response); packed: the sum).

    Rows are taken longest first, so each micro-batch holds rows of similar length (little padding)
    and the cut is deterministic. A row longer than `max_tokens` on its own forms a micro-batch of
    one (config checks keep that from happening with the shipped budgets)."""
    order = sorted(range(len(prompt_lengths)), key=lambda i: -(prompt_lengths[i] + response_lengths[i]))
    chunks: list[list[int]] = []
    current: list[int] = []
    p_max = r_max = total = 0
    for i in order:
        p, r = prompt_lengths[i], response_lengths[i]
        if layout == "packed":
            cost = total + p + r
        else:
            cost = (len(current) + 1) * (max(p_max, p) + max(r_max, r, 1))
        if current and (len(current) >= max_rows or cost > max_tokens):
            chunks.append(current)
            current, p_max, r_max, total = [], 0, 0, 0
        current.append(i)
        p_max, r_max, total = max(p_max, p), max(r_max, r), total + p + r
    if current:
        chunks.append(current)
    return chunks
