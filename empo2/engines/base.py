"""The rollout engine contract: token ids in, sampled token ids and their log-probs out.

Why token ids and not text: the trainer must train on exactly the tokens that were sampled, and
recompute their log-probs on exactly the same prompt. Re-tokenizing decoded text can merge or split
tokens differently, which silently biases the importance ratio. So the chat template is applied on
our side once, and engines receive and return ids.

Log-probs are those of the sampling distribution (logits / temperature) for each sampled token;
at temperature 0 (greedy) they are the untempered ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from empo2.registry import Registry


@dataclass
class SamplingParams:
    max_new_tokens: int = 32
    """Most tokens to generate."""
    temperature: float = 1.0
    """0 means greedy."""
    stop: list[str] = field(default_factory=lambda: ["\n"])
    """Generation ends after the token that completes one of these strings."""


@dataclass
class Generation:
    token_ids: list[int]
    """Sampled response tokens, up to and including the stop/eos token when one was produced."""
    logprobs: list[float]
    """Log-prob of each sampled token under the sampling distribution."""
    text: str
    """Decoded response (special tokens removed)."""
    finish_reason: str
    """`stop` (stop string), `eos`, or `length`."""


class RolloutEngine(ABC):
    """Generates responses for batches of prompts with the current policy."""

    @classmethod
    def from_config(cls, cfg: Any, policy, tokenizer, work_dir: Path) -> "RolloutEngine":
        """Build from the run config; `work_dir` is this rank's folder for weight hand-over files."""
        return cls(policy, tokenizer, max_batch_size=cfg.engine.max_batch_size)

    @abstractmethod
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        """One generation per prompt, in order."""

    def sync_weights(self) -> None:
        """Make the engine serve the trainer's current weights (after each optimizer phase)."""

    def release_memory(self) -> None:
        """The rollout phase is over: free what the update needs (the next sync wakes the engine)."""

    def metrics(self) -> dict[str, float]:
        """Engine facts for the iteration's metrics (weight version, sync time, ...)."""
        return {}

    def close(self) -> None:
        """Release processes and memory."""


ENGINES: Registry[type[RolloutEngine]] = Registry("rollout engine")


def trim_response(token_ids: list[int], tokenizer, stop: list[str], eos_ids: set[int]) -> tuple[list[int], str]:
    """Cut a raw continuation after the first eos token or the token that completes a stop string."""
    text = ""
    for i, tok in enumerate(token_ids):
        if tok in eos_ids:
            return token_ids[: i + 1], "eos"
        text = tokenizer.decode(token_ids[: i + 1], skip_special_tokens=True)
        if any(s in text for s in stop):
            return token_ids[: i + 1], "stop"
    return list(token_ids), "length"
