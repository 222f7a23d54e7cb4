"""The contract between the trainer and a multi-step text environment.

Why this shape: the rollout loop needs only instances (ids with train/test splits), `reset` and
`step`. One `TextEnv` object plays one episode at a time and is reused across episodes, so an
environment with expensive state (a JVM, a search index) keeps it alive and `close()` releases it.
How the agent is *prompted* also belongs to the environment (what the first message says, the
one-line instruction on the latest turn), since each benchmark's paper prompt differs.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from empo2.registry import Registry


@dataclass
class StepResult:
    """What `TextEnv.step` returns for one action: the next observation, the step's reward, whether
    the episode ended, and `info` (the keys the trainer reads are listed on the field; all others
    go to the trajectory files as they are)."""

    observation: str
    """What the agent sees next."""
    reward: float
    """Reward of this step (for score-based environments: the score change)."""
    done: bool
    """The episode ended (success, failure, or the environment's own end)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Extra facts. The trainer reads: `success` (bool; the episode's success, read when `done`;
    absent: False), `raw_valid` (bool; the model's text was already a valid action, before any
    mapping; absent: False, so `rollout/raw_valid_action_rate` reads 0) and `score` (number; the
    final score evaluation tables report; absent: the episode's return is used). Everything else is
    kept in the trajectory files."""


class TextEnv(ABC):
    """One environment simulator playing one episode at a time."""

    name: ClassVar[str] = "text-env"
    default_max_turns: ClassVar[int] = 30
    prompt_history: ClassVar[str] = "chat"
    """`chat`: the prompt is the whole episode as a chat (observation / action turns); `latest`:
    only the latest user message, which the environment writes to carry what it wants of the past."""
    steps_on_threads: ClassVar[bool] = False
    """Whether different instances may reset and step at once on threads (`rollout.env_threads`):
    true only where each instance owns everything a call touches (no shared tokenizer, index or cache)."""
    format_penalty: float = 0.0
    """Subtracted from the reward of a step whose answer `parse_action` calls malformed."""

    @abstractmethod
    def instances(self, split: str) -> list[str]:
        """Instance ids of a split (`train` or `test`); an instance = task + variation, written
        `<task>/<variation>` (`task_of` splits at the first `/`). Tips are stored and retrieved per
        instance, so memory helps only where instances repeat across iterations."""

    @abstractmethod
    def reset(self, instance: str) -> tuple[str, dict[str, Any]]:
        """Start an episode on `instance`; return the first observation and info. The trainer reads
        `info["task"]` (the task in words; absent: the instance id): it is joined with the
        observation into every memory key and kept in the trajectory files. It is not shown to the
        model by itself: the prompt is what `first_message` writes, so put the task there."""

    @abstractmethod
    def step(self, action: str) -> StepResult:
        """Apply one action: what `parse_action` returned for the model's answer (cut to 2,000
        characters), also when it called the answer malformed; the trainer then subtracts
        `format_penalty` from this step's reward itself. `parse_action` runs on this same object
        just before `step`, so an environment that judges the raw text (for `info["raw_valid"]`)
        can keep what it saw there."""

    def max_turns(self, instance: str) -> int:
        """Turn cap for an instance (environments with per-task caps override)."""
        return self.default_max_turns

    @classmethod
    def check_options(cls, **options: Any) -> None:
        """Check `env.options` values without building anything; raise ValueError naming the option.
        Runs when the config loads (before any model), after the options were bound to `__init__`'s
        signature, and receives every option `__init__` takes: those the config wrote, and the
        defaults of the others. Default: nothing beyond that binding."""

    @classmethod
    def check_instance(cls, instance: str, **options: Any) -> None:
        """Raise ValueError (saying what an instance id looks like) when `instance` can be no
        instance of this environment under `options`. Runs at config time on every id of
        `env.train_instances` and `env.test_instances`, with the options as `check_options` gets
        them (`__init__`'s defaults filled in), building nothing. Default: every id is accepted."""

    @classmethod
    def retarget(cls, options: dict[str, Any], task: str) -> dict[str, Any]:
        """`env.options` that make this environment play `task` (adaptation to a new task)."""
        raise ValueError(f"{cls.__name__} has no tasks to adapt to (it does not implement retarget)")

    def task_of(self, instance: str) -> str:
        """The task an instance belongs to (for per-task metrics)."""
        return instance.split("/")[0]

    def state_key(self, observation: str) -> str:
        """The key under which step-level credit (`algo.advantage` gigpo, hgpo) treats two steps as
        acting in the same state. Default: the observation text itself; override when observations
        carry noise that does not change the state (a counter, a timestamp)."""
        return observation

    # ---- prompting -------------------------------------------------------------------------
    def first_message(self, observation: str, info: dict[str, Any]) -> str:
        """Content of the first user message (observation plus instructions)."""
        return observation

    def next_message(self, observation: str, info: dict[str, Any]) -> str:
        """Content of the user message after a step (the observation by default)."""
        return observation

    def turn_instruction(self) -> str:
        """Short instruction appended to every user message (`rollout.instruction: every_turn`, kept
        in the history so prompts chain) or to the latest one only (`latest`)."""
        return "Reply with exactly one action on one line and nothing else."

    def parse_action(self, text: str) -> tuple[str, bool]:
        """(the action to send to `step`, whether the answer was well formed) from the model's text.
        Default: the first non-empty line, always well formed."""
        return first_line(text), True

    # ---- warm start (optional) ---------------------------------------------------------------
    def demonstrations(self, instances: list[str]) -> list[list[str]]:
        """One action sequence per instance that solves it, for `python -m empo2.sft` (a gold path,
        a scripted solver). Each is replayed through `reset`/`step` and rendered with the rollout's
        own prompt code, so only the actions are needed here."""
        raise NotImplementedError(
            f"{type(self).__name__} has no demonstrations; implement TextEnv.demonstrations to warm-start on it"
        )

    def answer_for(self, action: str) -> str:
        """The answer a model writes to take `action`: what `parse_action` reads back as that action
        (the warm start's training target)."""
        return action

    def close(self) -> None:
        """Release processes and files."""


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


ENVS: Registry[type[TextEnv]] = Registry("environment")


def env_class(name: str, cls_path: str | None = None) -> type[TextEnv]:
    """The class named in config: `env.cls` (`pkg.mod:Class`) wins over the registry name."""
    if cls_path:
        module_name, _, attr = cls_path.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"env.cls: cannot import {cls_path!r}: {err}") from None
        if not (isinstance(cls, type) and issubclass(cls, TextEnv)):
            raise ValueError(f"env.cls: {cls_path!r} is not a subclass of empo2.envs.TextEnv")
        return cls
    import empo2.envs  # noqa: F401  (registers the built-in environments)

    try:
        return ENVS.get(name)
    except KeyError as err:
        raise ValueError(f"env.name: {err.args[0]}") from None
