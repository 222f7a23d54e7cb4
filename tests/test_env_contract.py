"""A third-party environment written from the contract alone (docs/ENVIRONMENTS.md, `TextEnv`)
goes through fit, evaluate and adapt, and every `info` key the contract names reaches the metrics.

`DoorsEnv` lives here, outside the package, and is named by `env.cls` as a user's class would be:
two tasks (`left`, `right`: which door hides the exit), three doors, one step per episode. Nothing
here touches trainer internals.
"""

from __future__ import annotations

import csv
import json
from typing import Any

from empo2.adapt import adapt
from empo2.config import load_config
from empo2.envs import StepResult, TextEnv
from empo2.evaluate import evaluate
from empo2.fit import fit

from conftest import tiny_overrides

DOORS = ("left", "middle", "right")


class DoorsEnv(TextEnv):
    name = "doors"
    default_max_turns = 1

    def __init__(self, exit_door: str = "left", variations: int = 3) -> None:
        self.exit_door, self.variations = exit_door, variations

    @classmethod
    def check_options(cls, exit_door: str, variations: int) -> None:  # __init__'s defaults arrive filled in
        if exit_door not in DOORS:
            raise ValueError(f"exit_door: one of {', '.join(DOORS)}, got {exit_door!r}")

    @classmethod
    def retarget(cls, options: dict[str, Any], task: str) -> dict[str, Any]:
        if task not in DOORS:
            raise ValueError(f"doors has tasks {', '.join(DOORS)}, not {task!r}")
        return {**options, "exit_door": task}

    def instances(self, split: str) -> list[str]:
        first = 0 if split == "train" else 100
        return [f"{self.exit_door}/{first + v}" for v in range(self.variations)]

    def reset(self, instance: str) -> tuple[str, dict[str, Any]]:
        return "You stand before three doors: left, middle and right.", {"task": "leave through the exit door"}

    def step(self, action: str) -> StepResult:
        door = next((d for d in DOORS if d in action.lower()), None)
        won = door == self.exit_door
        return StepResult("You are outside." if won else "A wall.", 10.0 if won else 0.0, True,
                          {"success": won, "raw_valid": door is not None, "score": 100.0 if won else 0.0})

    def first_message(self, observation: str, info: dict[str, Any]) -> str:
        return f"Task: {info['task']}.\n{observation}\nAnswer like: open left door"


def test_a_user_environment_through_fit_evaluate_and_adapt(tiny_model, tmp_path):
    over = tiny_overrides(tiny_model, tmp_path, name="doors", **{
        "env.cls": "test_env_contract:DoorsEnv", "env.options": "{exit_door: left, variations: 2}",
        "rollout.max_new_tokens": 6, "trainer.max_epochs": 1, "mode.p": 1.0, "mode.q": 0.5,
        "eval.episodes_per_instance": 1, "adapt.iterations": 2})
    cfg = load_config(None, over)
    fit(cfg)
    run = tmp_path / "doors"
    with (run / "logs" / "metrics.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    # every info key of the contract was read: raw_valid feeds the rate, success the success rate
    with (run / "trajectories" / "iter_00000.jsonl").open() as fh:
        steps = [s for line in fh for s in json.loads(line)["steps"]]
    assert steps and float(row["rollout/raw_valid_action_rate"]) == sum(s["info"]["raw_valid"] for s in steps) / len(steps)
    assert float(row["rollout/success_rate"]) == float(row["rollout/return"]) / 10.0  # 10 per success here
    assert float(row["memory/tips"]) > 0  # memory keys built from info["task"] and the observation

    table, md = evaluate(load_config(None, [*over, "ckpt_path=last"]))
    assert [t.task for t in table[:-1]] == ["left"] and md.is_file()
    assert table[-1].mean_score == 100.0 * table[-1].success_rate  # the score column reads info["score"]

    rows, adapt_dir, _ = adapt(load_config(None, [*over, "ckpt_path=last", "adapt.target_task=right"]))
    assert len(rows) == 2 and adapt_dir.is_dir()
