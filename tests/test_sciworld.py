"""ScienceWorld adapter on a real JVM (one shared by the module): gold paths, lean step, failures."""

import pytest

from empo2.envs.sciworld import PAPER_TASKS, ScienceWorldEnv, simplification_for

pytest.importorskip("scienceworld")


@pytest.fixture(scope="module")
def env():
    e = ScienceWorldEnv(tasks=list(PAPER_TASKS))
    yield e
    e.close()


def gold_path(env, instance):
    task, _, var = instance.rpartition("/")
    jvm = env._jvm()
    jvm.load(task, int(var), simplification_for(task, "easy"), generateGoldPath=True)
    return jvm.get_gold_action_sequence()


@pytest.mark.slow
@pytest.mark.parametrize("task", PAPER_TASKS)
def test_gold_path_reaches_100_through_the_adapter(env, task):
    instance = f"{task}/{env.instances('train')[PAPER_TASKS.index(task) * 5].rsplit('/', 1)[1]}"
    path = gold_path(env, instance)
    env.reset(instance)
    total, result = float(env._score), None  # the score some tasks give at the start
    for action in path:
        result = env.step(action)
        total += result.reward
        if result.done:
            break
    assert total == 100.0 and result.done and result.info["success"], (instance, path)


def test_lean_step_reproduces_stock_step(env):
    instance = "find-non-living-thing/0"
    path = gold_path(env, instance)
    stock = env._jvm()
    stock.load("find-non-living-thing", 0, simplification_for("find-non-living-thing", "easy"))
    stock.reset()
    expected = [stock.step(a)[:3] for a in path]  # (observation, reward, done)
    env.reset(instance)
    got = [(r.observation, int(r.reward), r.done) for r in (env.step(a) for a in path)]
    assert got == [(o, r, d) for o, r, d in expected]


def test_wrong_focus_ends_with_minus_100_and_text_is_mapped(env):
    env.reset("find-living-thing/0")
    start = env._score  # some tasks give points at the start
    r = env.step("I will focus on the kitchen door")  # not valid as typed: mapped by Jaccard
    assert r.info["raw_valid"] is False and r.info["action"] == "focus on door to kitchen"
    assert r.info["score"] == -100 and r.reward == -100.0 - start and r.done and r.info["success"] is False


def test_turn_caps_and_bad_instances(env):
    assert env.max_turns("chemistry-mix/0") == 60
    assert env.max_turns("measure-melting-point-known-substance/3") == 120
    assert env.max_turns("find-plant/1") == 30
    with pytest.raises(ValueError, match="unknown ScienceWorld instance"):
        env.reset("boil-water/1")


def test_dead_jvm_is_replaced(env):
    env.reset("find-plant/0")
    env._env._gateway.java_process.kill()
    env._env._gateway.java_process.wait()
    with pytest.raises(RuntimeError, match="JVM failed"):
        env.step("look around")
    obs, info = env.reset("find-plant/0")  # a fresh JVM
    assert "This room is called" in obs and env.step("look around").info["raw_valid"]


@pytest.mark.slow
def test_short_fit_on_real_scienceworld(tiny_model, tmp_path):
    from conftest import tiny_overrides

    from empo2.config import load_config
    from empo2.fit import fit
    import csv

    over = {"env.name": "sciworld", "env.options": "{tasks: [find-non-living-thing], train_variations: 2}",
            "env.max_turns": 3, "rollout.tasks_per_iteration": 1, "rollout.group_size": 2,
            "trainer.max_epochs": 1, "mode.p": 1.0, "rollout.max_prompt_tokens": 2048}
    fit(load_config(None, tiny_overrides(tiny_model, tmp_path, name="sw", **over)))
    with (tmp_path / "sw" / "logs" / "metrics.csv").open() as fh:
        row = next(csv.DictReader(fh))
    assert float(row["rollout/episode_length"]) > 0 and float(row["rollout/env_errors"]) == 0
    assert float(row["memory/entries"]) >= 0
