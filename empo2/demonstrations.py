"""Demonstrations played through the environment and turned into supervised rows.

Why replay through the rollout itself: a warm-started policy must have been trained on exactly the
prompts it will act on. So a demonstration is not rendered by a second prompt builder; it is
*played* by `run_episodes` with an engine that answers from the script instead of sampling. The
conversation, the per-turn instruction, history dropping and the chat template are the rollout's
own, and every row is (the prompt as the rollout renders it, the answer a model would write).

Which instances are demonstrated is the caller's choice (`sft.*`); `DemoSource` says which
environment options and instances they were, so a warm start can prove it never saw what
evaluation plays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from empo2.conversation import PromptLayout
from empo2.engines.base import Generation, RolloutEngine, SamplingParams
from empo2.envs.base import TextEnv
from empo2.episode import Episode
from empo2.rollout import run_episodes


class ReplayEngine(RolloutEngine):
    """Answers with scripted texts, one per call, for a single episode at a time.

    The answer's tokens end as a sampled answer would: with the first stop string when the
    sampling parameters have stops (unless the answer already ends with one), else with eos."""

    def __init__(self, tokenizer, answers: list[str]) -> None:
        self.tokenizer = tokenizer
        self.answers = list(answers)
        self.turn = 0

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        if len(prompts) != 1:
            raise ValueError("ReplayEngine plays one episode at a time")
        if self.turn >= len(self.answers):  # the environment wants more turns than the script has
            text = ""
        else:
            text = self.answers[self.turn]
        self.turn += 1
        ids = answer_token_ids(self.tokenizer, text, params.stop)
        return [Generation(ids, [0.0] * len(ids), text, "stop")]


def answer_token_ids(tokenizer, answer: str, stop: list[str]) -> list[int]:
    """Token ids of `answer` as a complete response: closed by the first stop string, or by eos."""
    if stop:
        closed = answer if any(answer.endswith(s) for s in stop) else answer + stop[0]
        return list(tokenizer(closed, add_special_tokens=False)["input_ids"])
    return list(tokenizer(answer, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


@dataclass
class DemoSource:
    """Where a set of demonstrations came from (recorded beside the warm-started weights)."""

    options: dict[str, Any]
    """The environment options the demonstrations were played with."""
    instances: list[str]
    """The demonstrated instances."""


@dataclass
class Demonstrations:
    episodes: list[Episode] = field(default_factory=list)
    """Replayed demonstrations that reached success."""
    failed: list[str] = field(default_factory=list)
    """Instances whose demonstration did not succeed when replayed (left out)."""
    sources: list[DemoSource] = field(default_factory=list)


def replay(
    env: TextEnv, instances: list[str], tokenizer, max_prompt_tokens: int, stop: list[str],
    max_turns: int | None = None, tag: str = "demo", layout: PromptLayout = PromptLayout(),
) -> tuple[list[Episode], list[str]]:
    """Play each instance's demonstration through `env` with the rollout's own code; returns
    (successful episodes, instances whose demonstration did not succeed)."""
    scripts = env.demonstrations(instances)
    if len(scripts) != len(instances):
        raise ValueError(f"{type(env).__name__}.demonstrations returned {len(scripts)} scripts for {len(instances)} instances")
    params = SamplingParams(max_new_tokens=1, temperature=0.0, stop=list(stop))
    done, failed = [], []
    for k, (instance, actions) in enumerate(zip(instances, scripts)):
        ep = Episode(uid=f"{tag}-{k}", instance=instance, group=f"{tag}-{k}")
        engine = ReplayEngine(tokenizer, [env.answer_for(a) for a in actions])
        turns = max(max_turns or env.max_turns(instance), len(actions))
        run_episodes([env], [ep], engine, tokenizer, params, max_prompt_tokens, max_turns=turns, layout=layout)
        if ep.success:
            done.append(ep)
        else:
            failed.append(instance)
    return done, failed
