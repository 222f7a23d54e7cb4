"""ScienceWorld adapter: long-lived heap-capped JVMs, a lean step, and action mapping on demand.

Why lean: the stock `env.step()` rebuilds the list of valid actions on every call (~37 of its
~46 ms). Here a step sends the text straight to the simulator and reads score and completion; only
when the simulator does not understand the text is the valid-action list fetched, the text mapped
to the valid action with the highest word-set Jaccard similarity (as the paper does), and that
action sent instead. `info["raw_valid"]` records whether the model's own text was understood.

Why long-lived JVMs: starting one costs 0.7–2 s and ~340 MB (heap capped with -Xmx256m); loading a
task into a running one costs ~35 ms. Each environment object keeps its JVM for its lifetime and
`load()`s per episode; `close()` ends it. A JVM that dies mid-episode raises from `step` (the
rollout marks that episode truncated) and is replaced at the next `reset`.

Scores follow the simulator: reward = score change since the previous step, the first step
measured from the score right after reset (some tasks award a few points at the start, as the stock
step does); a wrong `focus on` sets the score to −100 and ends the episode. The per-task turn cap (30; 60 for chemistry-mix; 120 for
measure-melting-point-known-substance) is the wrapper's, since the simulator counts ticks.
"""

from __future__ import annotations

import os
import threading
from typing import Any, ClassVar

from empo2.envs import sciworld_prompt as prompt
from empo2.envs.base import ENVS, StepResult, TextEnv
from empo2.envs.keyroom import jaccard

PAPER_TASKS = (
    "chemistry-mix", "chemistry-mix-paint-secondary-color", "chemistry-mix-paint-tertiary-color",
    "find-animal", "find-living-thing", "find-non-living-thing", "find-plant", "identify-life-stages-1",
    "identify-life-stages-2", "lifespan-longest-lived", "lifespan-longest-lived-then-shortest-lived",
    "lifespan-shortest-lived", "measure-melting-point-known-substance", "power-component",
    "power-component-renewable-vs-nonrenewable-energy", "test-conductivity",
    "test-conductivity-of-unknown-substances", "use-thermometer",
)
PAPER_TURN_CAPS = {"chemistry-mix": 60, "measure-melting-point-known-substance": 120}
"""The paper's caps (EMPO2.md §7): 30 turns, except these; `env.options.caps: paper`."""
TURN_CAPS = {
    "boil": 230, "melt": 190, "freeze": 170, "change-the-state-of-matter-of": 160,
    "measure-melting-point-known-substance": 120, "measure-melting-point-unknown-substance": 120,
    "power-component-renewable-vs-nonrenewable-energy": 40, "test-conductivity": 50,
    "test-conductivity-of-unknown-substances": 60, "grow-plant": 100, "grow-fruit": 120, "chemistry-mix": 70,
    "chemistry-mix-paint-secondary-color": 40, "chemistry-mix-paint-tertiary-color": 60, "identify-life-stages-1": 60,
    "inclined-plane-determine-angle": 220, "inclined-plane-friction-named-surfaces": 150,
    "inclined-plane-friction-unnamed-surfaces": 260, "mendelian-genetics-known-plant": 190,
    "mendelian-genetics-unknown-plant": 180,
}
"""The default caps (`env.options.caps: gold_paths`): the longest gold path of the variations a run
plays by default (first 5 train, first 20 test), +25%, in tens, at least 30 and at least the paper's
cap; 30 for the tasks not listed. Measured by bench/sciworld_gold_paths.py
(results/sciworld-gold-paths.csv); a test keeps every cap above its task's longest path."""
_LAUNCH = threading.Lock()
"""Held while a JVM starts: the launch passes its heap flag through the process environment."""

UNKNOWN_ACTION = "No known action matches that input."
AMBIGUOUS = "Ambiguous request"


def simplification_for(task: str, preset: str) -> str:
    """`easy` without noElectricalAction on electrical tasks (the simulator rejects it there)."""
    if preset != "easy":
        return preset
    parts = ["teleportAction", "openDoors", "selfWateringFlowerPots"]
    if not ("power-component" in task or "conductivity" in task):
        parts.append("noElectricalAction")
    return ",".join(parts)


@ENVS.register("sciworld")
class ScienceWorldEnv(TextEnv):
    name: ClassVar[str] = "sciworld"
    default_max_turns: ClassVar[int] = 30
    steps_on_threads: ClassVar[bool] = True  # each instance drives its own JVM

    def __init__(
        self,
        tasks: list[str] | tuple[str, ...] = ("find-non-living-thing",),
        simplification: str = "easy",
        train_variations: int = 5,
        test_variations: int = 20,
        heap: str = "256m",
        turn_caps: dict[str, int] | None = None,
        caps: str = "gold_paths",
        examples: int = 2,
        example_obs_chars: int = 0,
        examples_cache: str | None = None,
    ) -> None:
        """`caps`: per-task turn caps, `gold_paths` (`TURN_CAPS`, admitting every measured gold path)
        or `paper` (`PAPER_TURN_CAPS`); `turn_caps` overrides single tasks. `examples`: worked examples
        in the first message (0 for none); `example_obs_chars`: cut
        each example observation to this many characters (0: whole); `examples_cache`: folder of
        the replayed transcripts (default `$EMPO2_CACHE/sciworld-examples`)."""
        self.check_options(tasks=tasks, simplification=simplification, examples=examples, caps=caps)
        self.tasks = list(tasks)
        self.simplification = simplification
        self.train_variations, self.test_variations = train_variations, test_variations
        self.heap = heap
        self.turn_caps = {**(TURN_CAPS if caps == "gold_paths" else PAPER_TURN_CAPS), **(turn_caps or {})}
        self.examples, self.example_obs_chars = examples, example_obs_chars
        self._gold = prompt.GoldExamples(examples_cache)
        self._train_variations: dict[str, list[int]] = {}
        self._env: Any = None
        self._task = ""
        self._score = 0
        self._done = True

    # ------------------------------------------------------------------ the JVM
    def _jvm(self):
        if self._env is None:
            from scienceworld import ScienceWorldEnv as StockEnv

            flag = f"-Xmx{self.heap} -XX:+UseSerialGC"
            with _LAUNCH:  # environments reset on threads (`rollout.env_threads`): one launch at a time sets the variable
                before = os.environ.get("JAVA_TOOL_OPTIONS")
                os.environ["JAVA_TOOL_OPTIONS"] = flag
                try:
                    self._env = StockEnv("", envStepLimit=10**9)
                finally:
                    if before is None:
                        os.environ.pop("JAVA_TOOL_OPTIONS", None)
                    else:
                        os.environ["JAVA_TOOL_OPTIONS"] = before
        return self._env

    @classmethod
    def retarget(cls, options: dict[str, Any], task: str) -> dict[str, Any]:
        out = {**options, "tasks": [task]}
        cls.check_options(**out)
        return out

    @staticmethod
    def check_options(tasks=("find-non-living-thing",), simplification: str = "easy", examples: int = 2,
                      caps: str = "gold_paths", **_: Any) -> None:
        """Checks that need no JVM (run by the config validation too)."""
        from scienceworld.constants import TASKS

        names = [t["task_name"] for t in TASKS]
        if isinstance(tasks, str) or not tasks:
            raise ValueError(f"tasks: a non-empty list of ScienceWorld task names, got {tasks!r}")
        unknown = [t for t in tasks if t not in names]
        if unknown:
            raise ValueError(f"tasks: unknown ScienceWorld task(s) {unknown}; known: {', '.join(names)}")
        if examples < 0:
            raise ValueError(f"examples: must be >= 0, got {examples}")
        if caps not in ("gold_paths", "paper"):
            raise ValueError(f"caps: gold_paths (admit every gold path) or paper (30; 60 and 120 for two tasks), got {caps!r}")

    @classmethod
    def check_instance(cls, instance: str, tasks=("find-non-living-thing",), **_: Any) -> None:
        task, _, var = instance.rpartition("/")
        if task not in tasks or not var.isdigit():
            raise ValueError(f"{instance!r} is no instance of env.options.tasks {list(tasks)}; "
                             f"ScienceWorld instances are <task>/<variation>, e.g. {tasks[0]}/0")

    def close(self) -> None:
        """Ask the JVM to exit, wait for it (2 s), kill it if it lingers; never leaves a process."""
        if self._env is not None:
            proc = getattr(getattr(self._env, "_gateway", None), "java_process", None)
            try:
                self._env.close()
            except Exception:  # noqa: BLE001 - a dead JVM cannot be closed politely
                pass
            self._env = None
            if proc is not None:
                try:
                    proc.wait(timeout=2)
                except Exception:  # noqa: BLE001 - still running: end it
                    proc.kill()
                    proc.wait()
        self._done = True

    # ------------------------------------------------------------------ instances
    def train_variations_of(self, task: str) -> list[int]:
        if task not in self._train_variations:
            env = self._jvm()
            env.load(task, 0, simplification_for(task, self.simplification))
            self._train_variations[task] = list(env.get_variations_train())
        return self._train_variations[task]

    def instances(self, split: str) -> list[str]:
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}; use train or test")
        out = []
        for task in self.tasks:
            if split == "train":
                variations = self.train_variations_of(task)[: self.train_variations]
            else:
                env = self._jvm()
                env.load(task, 0, simplification_for(task, self.simplification))
                variations = list(env.get_variations_test())[: self.test_variations]
            out += [f"{task}/{v}" for v in variations]
        return out

    def demonstrations(self, instances: list[str]) -> list[list[str]]:
        """The simulator's own gold action sequences (cached with the worked examples)."""
        out = []
        for instance in instances:
            task, _, var = instance.rpartition("/")
            if task not in self.tasks or not var.isdigit():
                raise ValueError(f"unknown ScienceWorld instance {instance!r}; tasks: {self.tasks}")
            gold = self._gold.get(self._jvm(), task, int(var), simplification_for(task, self.simplification))
            out.append([action for action, _ in gold["steps"]])
        return out

    def max_turns(self, instance: str) -> int:
        return self.turn_caps.get(self.task_of(instance), self.default_max_turns)

    # ------------------------------------------------------------------ episode
    def reset(self, instance: str) -> tuple[str, dict[str, Any]]:
        task, _, var = instance.rpartition("/")
        if task not in self.tasks or not var.isdigit():
            raise ValueError(f"unknown ScienceWorld instance {instance!r}; tasks: {self.tasks}")
        try:
            return self._start(task, int(var))
        except Exception as err:  # the JVM died or the bridge broke: start a fresh one next time
            self.close()
            raise RuntimeError(f"ScienceWorld JVM failed during reset: {type(err).__name__}: {err}") from err

    def _start(self, task: str, var: int) -> tuple[str, dict[str, Any]]:
        env = self._jvm()
        simplification = simplification_for(task, self.simplification)
        examples = [
            prompt.render_example(self._gold.get(env, task, v, simplification), k + 1, self.example_obs_chars)
            for k, v in enumerate(prompt.example_variations(self.train_variations_of(task), var, self.examples))
        ]
        env.load(task, var, simplification)
        env.server.reset()
        obs = env.server.step("look around")
        # Some tasks score points at the start: rewards are changes from this baseline.
        self._task, self._score, self._done = task, int(round(100 * env.server.getScore())), False
        description = env.server.getTaskDescription()
        return obs, {"task": description, "inventory": env.server.freeActionInventory(), "examples": examples}

    def valid_actions(self) -> list[str]:
        return list(self._jvm().server.getValidActionObjectCombinations())

    def step(self, action: str) -> StepResult:
        if self._done:
            raise RuntimeError("step() after the episode ended; call reset()")
        env = self._env
        try:
            text = action.strip()
            # While the simulator asks which object was meant (AMBIGUOUS), a number is a valid
            # answer and goes through as typed; the question is the observation the agent answers.
            obs = env.server.step(text) if text else UNKNOWN_ACTION
            raw_valid = not obs.startswith(UNKNOWN_ACTION)
            sent = text
            # Otherwise map to the closest valid action, if any shares a word with the text; a bare
            # number answers only the simulator's question, so outside one it stays unknown.
            if not raw_valid and not text.isdigit():
                valid = self.valid_actions()
                closest = max(valid, key=lambda v: jaccard(text, v)) if valid else ""
                if closest and jaccard(text, closest) > 0:
                    obs, sent = env.server.step(closest), closest
            score = int(round(100 * env.server.getScore()))
            done = bool(env.server.getCompleted()) or score < 0
        except Exception as err:  # the JVM died or the bridge broke: replace it at the next reset
            self.close()
            raise RuntimeError(f"ScienceWorld JVM failed: {type(err).__name__}: {err}") from err
        reward = float(score - self._score)
        self._score = score
        self._done = done
        info: dict[str, Any] = {"raw_valid": raw_valid, "action": sent, "score": score}
        if done:
            info["success"] = score >= 100
        return StepResult(obs, reward, done, info)

    # ------------------------------------------------------------------ prompting
    def first_message(self, observation: str, info: dict[str, Any]) -> str:
        return prompt.first_message(observation, info["task"], info["inventory"], info.get("examples", []))

    def turn_instruction(self) -> str:
        return prompt.TURN_INSTRUCTION
