"""Training rows (one per step) and the segments they are trained in.

Why segments: with token-exact histories (`empo2.conversation`), step t+1's prompt starts with step
t's prompt and response. Scoring each step as its own sequence then repeats the whole history once
per step, a cost that grows with T² while the tokens that carry a gradient are a few per turn. A
segment is a run of consecutive steps of one episode whose prompts chain; it is scored as one
sequence (the last step's prompt + response) with one response span per step, and each span's
log-probs equal those of its own step's prompt + response (causal attention sees the same prefix).
A chain breaks where a prompt is not an extension of the previous step's prompt + response (history
dropped for the budget, an environment that shows only its latest message, tips shown only on the
latest step); the next segment starts there. With `optim.sequences: per_step` every step is a
segment of its own (the authors' layout).

Which steps share an optimizer step: mini-batches are cut from shuffled *segments*, so the steps of
one segment always land in the same mini-batch; the number of optimizer steps per epoch is the
same as with per-step rows, ceil(global rows / `optim.mini_batch_size`), and the loss stays a
token-mean over each mini-batch's counted tokens across ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from empo2.modes import Mode


@dataclass
class TrainingRow:
    """One step's training data: Episode → Step → TrainingRow → TokenBatch → LossTerms."""

    episode: str
    """Uid of the episode the step belongs to."""
    mode: Mode
    """EMPO² mode of the episode (EMPO2.md §2)."""
    rollout_prompt: list[int]
    """The prompt the engine sampled the response with (tips included in memory modes)."""
    train_prompt: list[int]
    """The prompt log π_θ is taken on (EMPO2.md §6.3)."""
    old_prompt: list[int]
    """The prompt log π_old is taken on (EMPO2.md §6.3)."""
    tipfree_prompt: list[int]
    """The same step without any tips: where the low-probability mask is decided (§6.4)."""
    response_ids: list[int]
    """The sampled response tokens."""
    engine_logprobs: list[float]
    """The engine's log-probs of the response (diagnostics)."""
    advantage: float
    """The step's advantage."""
    masked: bool
    """Low-probability masking (EMPO2.md §6.4) applies to this row."""
    old_on_rollout_prompt: bool
    """log π_old is taken on the rollout prompt (then it also measures the engine/trainer gap)."""
    old_logprobs: list[float] = field(default_factory=list)
    """log π_old per response token (filled before the update)."""
    keep: list[float] = field(default_factory=list)
    """1 where the token counts in the loss, 0 where masked."""
    ref_logprobs: list[float] = field(default_factory=list)
    """log π_ref per response token on the train prompt (KL penalty only)."""
    rollout_prompt_logprobs: list[float] | None = None
    """The trainer's log-probs on the rollout prompt, where known (engine/trainer gap)."""
    gap_probe: bool = False
    """Scored on the rollout prompt only to measure the engine/trainer gap."""

    @classmethod
    def on_policy(cls, prompt: list[int], response: list[int], advantage: float, keep: list[float] | None = None,
                  episode: str = "") -> "TrainingRow":
        """A row trained on the prompt it was sampled with (no tips, no masking), as tests and
        benchmarks build them."""
        return cls(episode=episode, mode=Mode.ON_POLICY, rollout_prompt=prompt, train_prompt=prompt, old_prompt=prompt,
                   tipfree_prompt=prompt, response_ids=response, engine_logprobs=[0.0] * len(response),
                   advantage=advantage, masked=False, old_on_rollout_prompt=True,
                   keep=list(keep) if keep is not None else [1.0] * len(response))


def chains(prompt: Sequence[int], response: Sequence[int], next_prompt: Sequence[int]) -> bool:
    """`next_prompt` starts with `prompt` + `response` (the two steps can share one sequence)."""
    n, r = len(prompt), len(response)
    return len(next_prompt) > n + r and list(next_prompt[:n]) == list(prompt) and list(next_prompt[n:n + r]) == list(response)


def chain_groups(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                 breaks: Sequence[bool] | None = None) -> list[list[int]]:
    """Indices of consecutive (prompt, response) pairs grouped where each prompt extends the
    previous pair; `breaks[i]` forces pair i to start a new group (another episode)."""
    groups: list[list[int]] = []
    for i in range(len(prompts)):
        if groups and not (breaks is not None and breaks[i]) and chains(prompts[i - 1], responses[i - 1], prompts[i]):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@dataclass
class Segment:
    """Consecutive rows of one episode whose train prompts chain: scored as one sequence."""

    rows: list[TrainingRow]

    @property
    def sequence(self) -> list[int]:
        """The last row's train prompt + response: every row's prompt and response is a prefix."""
        last = self.rows[-1]
        return last.train_prompt + last.response_ids

    @property
    def spans(self) -> list[tuple[int, int]]:
        """(start, length) of each row's response in `sequence`."""
        return [(len(r.train_prompt), len(r.response_ids)) for r in self.rows]

    @property
    def counted_tokens(self) -> float:
        return float(sum(sum(r.keep) for r in self.rows))


def segments(rows: list[TrainingRow], shared: bool) -> list[Segment]:
    """Rows (in episode and step order) grouped into segments; one row each when not `shared`."""
    if not shared:
        return [Segment([r]) for r in rows]
    breaks = [i == 0 or rows[i].episode != rows[i - 1].episode for i in range(len(rows))]
    groups = chain_groups([r.train_prompt for r in rows], [r.response_ids for r in rows], breaks)
    return [Segment([rows[i] for i in g]) for g in groups]


def mini_batches(row_counts: list[int], total_rows: int, mini_batch_size: int, epochs: int,
                 generator: torch.Generator) -> list[list[int]]:
    """Shuffled mini-batches of segment indices. Every rank cuts its segments into the same number of
    optimizer steps, ceil(total_rows over all ranks / mini_batch_size), so ranks stay in step (a rank
    may contribute nothing to a step); within a rank, each cut falls where the running row count
    passes the next equal share, so mini-batches hold about the same number of rows."""
    steps = -(-total_rows // mini_batch_size)
    out: list[list[int]] = []
    if not steps:
        return out
    mine = sum(row_counts)
    for _ in range(epochs):
        order = torch.randperm(len(row_counts), generator=generator).tolist()
        batches: list[list[int]] = [[] for _ in range(steps)]
        seen = 0
        for i in order:
            k = min(steps - 1, (seen * steps) // max(mine, 1))  # the share the segment's first row falls in
            batches[k].append(i)
            seen += row_counts[i]
        out += batches
    return out
