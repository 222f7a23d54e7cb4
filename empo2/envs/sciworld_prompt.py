"""The ScienceWorld action prompt (EMPO2.md §3.1): instructions, worked examples, focus warning.

Why generated examples: the paper shows the agent two solved episodes of the same task. We do not
copy anyone's example file; each example is made by replaying ScienceWorld's own gold action
sequence on a *train variation other than the one being played*, and recording what the simulator
answered. Replaying costs up to a few seconds per variation (loading with gold-path generation is
slow on some tasks), so transcripts are cached as JSON under `$EMPO2_CACHE/sciworld-examples/`
(one file per task) and in memory; the cache holds the raw steps, and how much of each observation
is shown (`example_obs_chars`) is decided when the prompt is built.

Why a focus warning: `focus on X` is irreversible and a wrong one scores −100 and ends the episode.
The objects the task allows are exactly those the description names after "focus on", so they are
parsed from it and listed.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

ACTION_FORMATS = (
    "look around", "look at OBJ", "open OBJ", "close OBJ", "go to LOCATION", "teleport to LOCATION",
    "pick up OBJ", "move OBJ to OBJ", "pour OBJ in OBJ", "mix OBJ", "connect OBJ to OBJ",
    "activate OBJ", "deactivate OBJ", "use OBJ on OBJ", "focus on OBJ", "wait",
)
TURN_INSTRUCTION = (
    "If you are unsure what to do, explore. Reply with exactly one action on one line and nothing else."
)
_FOCUS = re.compile(r"focus on (.+?)(?=[.,;]\s|[.,;]?$|\s+(?:if|then|and then)\s)", re.IGNORECASE)


def focus_targets(description: str) -> list[str]:
    """Every object the description says to focus on, in order, without repeats."""
    out: list[str] = []
    for match in _FOCUS.finditer(" ".join(description.split())):
        target = match.group(1).strip()
        if target and target not in out:
            out.append(target)
    return out


def focus_warning(description: str) -> str:
    targets = focus_targets(description)
    if not targets:
        return "Warning: focus on an object only when the task asks for it; a wrong focus fails the task."
    listed = "; ".join(targets)
    return (
        f"Warning: the only things you may focus on are: {listed}. Focusing on anything else ends the "
        "episode as a failure, so focus only once you are sure."
    )


def example_variations(train_variations: list[int], played: int, k: int) -> list[int]:
    """The first `k` train variations other than the one being played."""
    return [v for v in train_variations if v != played][:k]


def clip(text: str, chars: int) -> str:
    text = text.strip()
    return text if chars <= 0 or len(text) <= chars else text[:chars].rstrip() + " ..."


def render_example(example: dict[str, Any], number: int, obs_chars: int) -> str:
    lines = [f"Example {number}. Task: {example['task']}"]
    for action, observation in example["steps"]:
        lines.append(f"> {action}")
        lines.append(clip(observation, obs_chars))
    return "\n".join(lines)


def first_message(observation: str, task: str, inventory: str, examples: list[str]) -> str:
    """First user message: observation, how to act, worked examples, the task, the warning, inventory."""
    parts = [
        observation.strip(),
        "You are an agent in a simulated science world. Each turn you give one action and the world "
        "tells you what happened. Actions take these forms (OBJ and LOCATION are names you have seen): "
        f"{'; '.join(ACTION_FORMATS)}. Whenever you enter a new room, start with look around.",
    ]
    if examples:
        parts.append("Here are solved episodes of other variations of this task:\n\n" + "\n\n".join(examples))
    parts.append(f"Your task: {task.strip()}\n{focus_warning(task)}")
    parts.append(inventory.strip())
    return "\n\n".join(parts)


class GoldExamples:
    """Worked-example transcripts from replayed gold paths, cached on disk and in memory."""

    _memory: dict[tuple[str, str, int, str], dict[str, Any]] = {}
    """Per process: (cache folder, task, variation, simplification) -> transcript."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        if cache_dir is None:
            from empo2.models import cache_dir as root

            cache_dir = root() / "sciworld-examples"
        self.cache_dir = Path(cache_dir)

    def _file(self, task: str) -> Path:
        return self.cache_dir / f"{task}.json"

    def _read(self, task: str) -> dict[str, Any]:
        try:
            return json.loads(self._file(task).read_text())
        except (OSError, json.JSONDecodeError):  # missing or damaged: rebuilt, not trusted
            return {}

    def _write(self, task: str, entries: dict[str, Any]) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=f".{task}.", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(entries, fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self._file(task))  # atomic: concurrent ranks never see half a file

    def get(self, jvm, task: str, variation: int, simplification: str) -> dict[str, Any]:
        """`{"task": description, "steps": [[action, observation], ...], "score": final score}`."""
        key = (str(self.cache_dir), task, variation, simplification)
        if key in self._memory:
            return self._memory[key]
        entries = self._read(task)
        name = f"{variation}|{simplification}"
        if name not in entries:
            entries[name] = self.replay(jvm, task, variation, simplification)
            self._write(task, {**self._read(task), name: entries[name]})
        self._memory[key] = entries[name]
        return entries[name]

    @staticmethod
    def replay(jvm, task: str, variation: int, simplification: str) -> dict[str, Any]:
        """Play the gold action sequence of one variation and record every observation."""
        jvm.load(task, variation, simplification, generateGoldPath=True)
        actions = list(jvm.get_gold_action_sequence())
        jvm.server.reset()
        description = jvm.server.getTaskDescription()
        steps = []
        for action in actions:
            steps.append([action, jvm.server.step(action)])
            if jvm.server.getCompleted():
                break
        return {"task": description, "steps": steps, "score": int(round(100 * jvm.server.getScore()))}
