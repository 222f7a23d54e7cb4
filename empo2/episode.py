"""What a rollout produces: episodes made of steps, and their JSONL form.

Why one record type for everything: tip generation, memory writes, intrinsic rewards, advantages,
training rows and the trajectory files all read the same `Episode`, so none of them re-derives
another's facts. A step keeps the exact prompt and response token ids (the training row) next to
the human-readable text (the trajectory file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from empo2.conversation import Conversation
from empo2.modes import Mode


@dataclass
class Step:
    prompt_ids: list[int]
    """Prompt token ids exactly as the engine saw them."""
    response_ids: list[int]
    """Sampled response token ids."""
    engine_logprobs: list[float]
    """The engine's log-probs of the response tokens (diagnostics; the trainer recomputes)."""
    response_text: str
    """Decoded response."""
    action: str
    """The action sent to the environment (first line of the response, stripped)."""
    observation: str
    """What the environment answered."""
    reward: float
    """Extrinsic reward of the step."""
    info: dict[str, Any] = field(default_factory=dict)
    """Environment info of the step."""
    intrinsic: float = 0.0
    """Intrinsic (novelty) reward added to this step."""
    tips: list[str] = field(default_factory=list)
    """Tips shown in this step's prompt."""
    dropped_turns: int = 0
    """History turns dropped to fit the prompt budget."""
    n_messages: int = 0
    """Messages of the conversation that formed this step's prompt (to re-render it tip-free)."""
    retrieved: int = 0
    """Tips retrieved for this step."""


@dataclass
class Episode:
    uid: str
    """`<iteration>-<index>`, unique within a run."""
    instance: str
    """Environment instance id (task + variation)."""
    group: str
    """GRPO group id: episodes of the same instance drawn in the same iteration."""
    mode: Mode = Mode.ON_POLICY
    """EMPO² mode of the iteration that produced it."""
    task: str = ""
    """The task in words (environment info `task`, else the instance id): part of memory keys."""
    observations: list[str] = field(default_factory=list)
    """observations[t] is the observation step t answered (the state at step t)."""
    steps: list[Step] = field(default_factory=list)
    conversation: Conversation = field(default_factory=Conversation)
    """The chat as the agent saw it (for tips and the tip-free prompt)."""
    success: bool = False
    truncated: bool = False
    """Ended by the turn cap or an environment error rather than by the environment."""
    error: str | None = None
    """Environment error that ended the episode, if any."""
    advantage: float = 0.0
    """The advantage of the episode's steps (the first step's when step-level credit differs per step)."""
    step_advantages: list[float] = field(default_factory=list)
    """One advantage per step (set by the estimator); empty: every step takes `advantage`."""
    tip: str = ""
    """The tip the policy wrote about this episode (empty if none was usable)."""

    @property
    def extrinsic_return(self) -> float:
        return sum(s.reward for s in self.steps)

    @property
    def intrinsic_return(self) -> float:
        return sum(s.intrinsic for s in self.steps)

    @property
    def total_return(self) -> float:
        """The return the advantage uses: Σ_t (r_t + r_int,t) (EMPO2.md §5)."""
        return self.extrinsic_return + self.intrinsic_return

    def discounted_return(self, gamma: float = 1.0) -> float:
        """R = Σ_t γ^t (r_t + r_int,t), the return the advantage judges (γ = 1: `total_return`)."""
        if gamma == 1.0:
            return self.total_return
        return sum(gamma ** t * (s.reward + s.intrinsic) for t, s in enumerate(self.steps))

    def advantage_at(self, t: int) -> float:
        """The advantage step t is trained with."""
        return self.step_advantages[t] if t < len(self.step_advantages) else self.advantage

    @property
    def uses_memory(self) -> bool:
        return Mode(self.mode).uses_memory

    def step_prompts(self, tokenizer, max_tokens: int, with_tips: bool) -> list[list[int]]:
        """Token ids of every step's prompt, rendered again turn by turn (with or without tips): the
        tip-free prompts of a memory-mode episode chain like its rollout prompts did."""
        at = [s.n_messages for s in self.steps]
        return [r.ids for r in self.conversation.step_prompts(tokenizer, max_tokens, with_tips, at)]

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid, "instance": self.instance, "group": self.group, "mode": self.mode, "task": self.task,
            "return": self.extrinsic_return, "intrinsic_return": self.intrinsic_return,
            "advantage": self.advantage, "success": self.success, "truncated": self.truncated, "tip": self.tip,
            "error": self.error, "first_observation": (
                self.conversation.messages[0].content if self.conversation.messages else ""
            ),
            "steps": [
                {"action": s.action, "response": s.response_text, "observation": s.observation,
                 "reward": s.reward, "intrinsic": s.intrinsic, "advantage": self.advantage_at(t), "tips": s.tips,
                 "prompt_tokens": len(s.prompt_ids), "response_tokens": len(s.response_ids),
                 "dropped_turns": s.dropped_turns, "info": s.info}
                for t, s in enumerate(self.steps)
            ],
        }


def write_jsonl(path: Path, episodes: list[Episode]) -> None:
    """Write atomically: a crash mid-write never leaves a half file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as fh:
        for ep in episodes:
            fh.write(json.dumps(ep.to_json(), default=str) + "\n")
    tmp.replace(path)
