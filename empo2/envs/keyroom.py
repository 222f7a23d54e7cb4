"""KeyRoom: a tiny pure-Python house where the object the task needs is in another room.

Why it exists: tests and the quickstart need an environment that starts in milliseconds, yet has
the property EMPO² is about: the agent must *explore* (the target is never in the starting room
unless asked), and acting on the wrong object fails the episode, as a wrong `focus on` does in
ScienceWorld. Scores follow ScienceWorld's scale: reaching the target's room is worth 50 points,
focusing on the target completes the task (100), a wrong focus sets the score to −100 and ends
the episode; the reward of a step is the score change. `room_bonus` and `failure_score` change the
two shaping numbers (0 and 0 give a success-only reward: 100 for the target, 0 otherwise), so an
experiment can separate "does training raise success" from "does it escape the penalty's pull". Free text is mapped to the valid action
with the highest word-set Jaccard similarity (as our ScienceWorld adapter does); text sharing no
word with any valid action is a no-op.

Instances are `find/<variation>`; each variation seeds its own layout, so the same id always
describes the same house. Train variations are 0..num_train−1, test ones follow.
"""

from __future__ import annotations

import inspect
import random
import re
from typing import Any, ClassVar

from empo2.envs.base import ENVS, StepResult, TextEnv

ROOMS = ("hallway", "kitchen", "workshop", "garden", "bedroom", "bathroom", "library", "garage", "attic")
OBJECTS = (
    "apple", "hammer", "key", "book", "cup", "plant", "battery", "candle", "shoe", "spoon",
    "lamp", "ball", "clock", "brush", "rope", "coin", "pillow", "bottle", "knife", "map",
)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def jaccard(a: str, b: str) -> float:
    """Word-set Jaccard similarity |A ∩ B| / |A ∪ B| (punctuation ignored)."""
    wa, wb = words(a), words(b)
    return len(wa & wb) / len(wa | wb) if wa and wb else 0.0


@ENVS.register("keyroom")
class KeyRoomEnv(TextEnv):
    name: ClassVar[str] = "keyroom"
    default_max_turns: ClassVar[int] = 8
    steps_on_threads: ClassVar[bool] = True  # all state is the instance's own

    def __init__(
        self,
        num_rooms: int = 4,
        objects_per_room: int = 2,
        target_in_start_room: bool = False,
        num_train: int = 50,
        num_test: int = 20,
        max_turns: int = 8,
        room_bonus: int = 50,
        failure_score: int = -100,
    ) -> None:
        self.check_options(num_rooms=num_rooms, objects_per_room=objects_per_room,
                           target_in_start_room=target_in_start_room, num_train=num_train, num_test=num_test,
                           max_turns=max_turns, room_bonus=room_bonus, failure_score=failure_score)
        self.num_rooms = num_rooms
        self.objects_per_room = objects_per_room
        self.target_in_start_room = target_in_start_room
        self.num_train, self.num_test = num_train, num_test
        self.room_bonus, self.failure_score = room_bonus, failure_score
        self.default_max_turns = max_turns  # type: ignore[misc]
        self._layout: dict[str, list[str]] = {}
        self._room = ""
        self._target = ""
        self._score = 0
        self._visited_target_room = False
        self._done = True

    @classmethod
    def check_options(cls, **options: Any) -> None:
        """The options' values, checked before anything is built (at config time and by the constructor)."""
        sig = inspect.signature(KeyRoomEnv.__init__)  # KeyRoom's own options (a subclass may take more)
        bound = sig.bind(None, **{k: v for k, v in options.items() if k in sig.parameters})
        bound.apply_defaults()
        o = bound.arguments
        for key in ("num_rooms", "objects_per_room", "num_train", "num_test", "max_turns", "room_bonus", "failure_score"):
            if not isinstance(o[key], int) or isinstance(o[key], bool):
                raise ValueError(f"env.options.{key}: an integer, got {o[key]!r}")
        if not isinstance(o["target_in_start_room"], bool):
            raise ValueError(f"env.options.target_in_start_room: true or false, got {o['target_in_start_room']!r}")
        for key in ("num_train", "num_test", "max_turns"):
            if o[key] < 1:
                raise ValueError(f"env.options.{key}: must be >= 1, got {o[key]}")
        rooms, per_room = o["num_rooms"], o["objects_per_room"]
        if not 1 <= rooms <= len(ROOMS):
            raise ValueError(f"env.options.num_rooms: must be 1..{len(ROOMS)}, got {rooms}")
        if per_room < 1 or rooms * per_room > len(OBJECTS):
            raise ValueError(f"env.options.objects_per_room: need 1..{len(OBJECTS) // rooms} for {rooms} rooms")
        if not 0 <= o["room_bonus"] < 100:
            raise ValueError(f"env.options.room_bonus: must be 0..99 (success scores 100), got {o['room_bonus']}")
        if o["failure_score"] > 0:
            raise ValueError(f"env.options.failure_score: must be 0 or below, got {o['failure_score']}")
        if rooms == 1 and not o["target_in_start_room"]:
            raise ValueError("env.options.target_in_start_room: must be true when num_rooms is 1")

    # The two layouts serve as tasks to adapt between: the target in another room, or in the hallway.
    TASKS: ClassVar[dict[str, bool]] = {"find": False, "find-here": True}

    @classmethod
    def retarget(cls, options: dict[str, Any], task: str) -> dict[str, Any]:
        if task not in cls.TASKS:
            raise ValueError(f"keyroom has tasks {', '.join(cls.TASKS)}, not {task!r}")
        return {**options, "target_in_start_room": cls.TASKS[task]}

    # ---- instances -------------------------------------------------------------------------
    @classmethod
    def check_instance(cls, instance: str, **options: Any) -> None:
        task, _, var = instance.partition("/")
        if task != "find" or not var.isdigit():
            raise ValueError(f"{instance!r} is no KeyRoom instance; they are find/<variation> "
                             f"(train: find/0 .. find/<num_train − 1>, test: the num_test after)")

    def instances(self, split: str) -> list[str]:
        if split == "train":
            return [f"find/{v}" for v in range(self.num_train)]
        if split == "test":
            return [f"find/{v}" for v in range(self.num_train, self.num_train + self.num_test)]
        raise ValueError(f"unknown split {split!r}; use train or test")

    def _build(self, instance: str) -> None:
        self.check_instance(instance)
        task, _, var = instance.partition("/")
        rng = random.Random(int(var))
        rooms = ["hallway", *rng.sample(ROOMS[1:], self.num_rooms - 1)]
        objects = rng.sample(OBJECTS, self.num_rooms * self.objects_per_room)
        k = self.objects_per_room
        self._layout = {room: objects[i * k:(i + 1) * k] for i, room in enumerate(rooms)}
        target_room = "hallway" if self.target_in_start_room else rng.choice(rooms[1:])
        self._target = rng.choice(self._layout[target_room])
        self._target_room = target_room

    # ---- episode ---------------------------------------------------------------------------
    def reset(self, instance: str) -> tuple[str, dict[str, Any]]:
        self._build(instance)
        self._room = "hallway"
        self._score = 0
        self._visited_target_room = self._room == self._target_room
        self._done = False
        return self._describe(), {"task": f"find the {self._target} and focus on it", "score": 0}

    def valid_actions(self) -> list[str]:
        actions = ["look around"]
        actions += [f"go to {room}" for room in self._layout if room != self._room]
        actions += [f"focus on {obj}" for obj in self._layout[self._room]]
        return actions

    def step(self, action: str) -> StepResult:
        if self._done:
            raise RuntimeError("step() after the episode ended; call reset()")
        valid = self.valid_actions()
        raw_valid = action.strip().lower().rstrip(".") in valid
        best = max(valid, key=lambda v: jaccard(action, v))
        info: dict[str, Any] = {"raw_valid": raw_valid}
        if not raw_valid and jaccard(action, best) == 0.0:
            info.update(valid=False, action=None, score=self._score)
            return StepResult("I do not understand that. Try one of the listed actions.", 0.0, False, info)
        info.update(valid=True, action=best)
        before = self._score
        if best == "look around":
            obs = self._describe()
        elif best.startswith("go to "):
            self._room = best[len("go to "):]
            obs = self._describe()
            if self._room == self._target_room and not self._visited_target_room:
                self._visited_target_room = True
                self._score = self.room_bonus
        else:
            obj = best[len("focus on "):]
            self._done = True
            if obj == self._target:
                self._score = 100
                obs = f"You focus on the {obj}. That is the one: task complete."
            else:
                self._score = self.failure_score
                obs = f"You focus on the {obj}, but the task needed the {self._target}. Task failed."
        info.update(score=self._score)
        if self._done:
            info["success"] = self._score == 100
        return StepResult(obs, float(self._score - before), self._done, info)

    def demonstrations(self, instances: list[str]) -> list[list[str]]:
        """A scripted explorer: focus on the target when it is in sight, else go through a door it
        has not been through yet, in an order drawn from the instance (it knows the task, not the
        house), so demonstrations do not teach "always the first door listed"."""
        out = []
        for instance in instances:
            self._build(instance)
            others = [room for room in self._layout if room != "hallway"]
            random.Random(f"demo/{instance}").shuffle(others)
            actions = []
            for room in ["hallway", *others]:
                if room != "hallway":
                    actions.append(f"go to {room}")
                if self._target in self._layout[room]:
                    actions.append(f"focus on {self._target}")
                    break
            out.append(actions)
        return out

    def _describe(self) -> str:
        items = ", ".join(f"a {o}" for o in self._layout[self._room])
        doors = ", ".join(r for r in self._layout if r != self._room)
        where = f"You are in the {self._room}. You see: {items}."
        return f"{where} From here you can go to: {doors}." if doors else where

    # ---- prompting -------------------------------------------------------------------------
    def first_message(self, observation: str, info: dict[str, Any]) -> str:
        return (
            f"Your task: {info['task']}. Focusing on any other object fails the task.\n"
            "Actions: look around | go to <room> | focus on <object>\n\n"
            f"{observation}"
        )

    def close(self) -> None:
        self._done = True
