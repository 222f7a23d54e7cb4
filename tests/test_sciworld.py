"""ScienceWorld adapter on a real JVM (one shared by the module): gold paths, lean step, failures,
the prompt with its replayed worked examples, and JVMs that never outlive their owner."""

import os

import pytest

from empo2.config import ConfigError, load_config
from empo2.envs import sciworld_prompt as prompt
from empo2.envs.sciworld import PAPER_TASKS, UNKNOWN_ACTION, ScienceWorldEnv, simplification_for

pytest.importorskip("scienceworld")


@pytest.fixture(scope="module")
def examples_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("sciworld-examples")


@pytest.fixture(scope="module")
def env(examples_cache):
    e = ScienceWorldEnv(tasks=list(PAPER_TASKS), examples_cache=str(examples_cache))
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
    assert len(path) <= env.max_turns(instance)  # the cap admits the gold path


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


def test_turn_caps_and_bad_instances(env, examples_cache):
    assert env.max_turns("chemistry-mix/0") == 70  # default caps admit the gold paths (below)
    assert env.max_turns("measure-melting-point-known-substance/3") == 120
    assert env.max_turns("find-plant/1") == 30
    paper = ScienceWorldEnv(tasks=list(PAPER_TASKS), caps="paper", turn_caps={"find-plant": 12},
                            examples_cache=str(examples_cache))
    assert [paper.max_turns(i) for i in ("chemistry-mix/0", "chemistry-mix-paint-tertiary-color/0", "find-plant/1")] == [60, 30, 12]
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
    before = java_children()
    fit(load_config(None, tiny_overrides(tiny_model, tmp_path, name="sw", **over)))
    assert java_children() == before  # a normal end closes every JVM the run started
    with (tmp_path / "sw" / "logs" / "metrics.csv").open() as fh:
        row = next(csv.DictReader(fh))
    assert float(row["rollout/episode_length"]) > 0 and float(row["rollout/env_errors"]) == 0
    assert float(row["memory/entries"]) >= 0


@pytest.mark.parametrize("description, targets", [
    ("Your task is to find a(n) animal. First, focus on the thing. Then, move it to the red box in the kitchen.",
     ["the thing"]),
    ("Your task is to use chemistry to create green-blue paint. When you are part-way done, focus on the "
     "intermediate (secondary color) paint you created.  When you are completely done, focus on the green paint.",
     ["the intermediate (secondary color) paint you created", "the green paint"]),
    ("Your task is to measure the melting point of lead, which is located around the kitchen. First, focus on "
     "the thermometer. Next, focus on the lead. If the melting point of lead is above 50.0 degrees celsius, "
     "focus on the red box. If the melting point of lead is below 50.0 degrees celsius, focus on the green box.",
     ["the thermometer", "the lead", "the red box", "the green box"]),
    ("Your task is to focus on the 4 life stages of the turtle, starting from earliest to latest.",
     ["the 4 life stages of the turtle"]),
    ("Focus on the animal with the longest life span. Then focus on the animal with the longest life span.",
     ["the animal with the longest life span"]),
    ("Your task is to boil water.", []),
])
def test_focus_targets_are_parsed_from_the_description(description, targets):
    assert prompt.focus_targets(description) == targets
    warning = prompt.focus_warning(description)
    assert all(t in warning for t in targets) and "fail" in warning


def test_example_variations_skip_the_played_one():
    assert prompt.example_variations([0, 1, 2, 3], played=1, k=2) == [0, 2]
    assert prompt.example_variations([0, 1, 2, 3], played=9, k=2) == [0, 1]
    assert prompt.example_variations([5], played=5, k=2) == []


def test_first_message_has_examples_task_warning_and_inventory(env, examples_cache, monkeypatch):
    obs, info = env.reset("find-non-living-thing/1")
    train = env.train_variations_of("find-non-living-thing")
    used = prompt.example_variations(train, 1, 2)
    assert 1 not in used and len(info["examples"]) == 2
    cached = prompt.GoldExamples(examples_cache)._read("find-non-living-thing")
    for v in used:  # each example is a replayed gold path that completes its own variation
        example = cached[f"{v}|{simplification_for('find-non-living-thing', 'easy')}"]
        assert example["score"] == 100 and example["steps"][-1][0].startswith("move")
        assert example["task"] in "\n".join(info["examples"])
    msg = env.first_message(obs, info)
    for part in (obs.strip(), "Example 1.", "Example 2.", info["task"], "focus on", "the thing", "look around",
                 "In your inventory"):
        assert part in msg, part
    assert msg.index("Example 2.") < msg.index("Your task:") < msg.index("In your inventory")
    assert "explore" in env.turn_instruction()
    # a second environment reads the cache: no gold path is replayed again
    prompt.GoldExamples._memory.clear()
    monkeypatch.setattr(prompt.GoldExamples, "replay", staticmethod(lambda *a: pytest.fail("replayed again")))
    other = ScienceWorldEnv(tasks=["find-non-living-thing"], examples_cache=str(examples_cache), examples=1,
                            example_obs_chars=40)
    try:
        _, info2 = other.reset("find-non-living-thing/0")
        assert len(info2["examples"]) == 1 and " ..." in info2["examples"][0]  # observations clipped
    finally:
        other.close()


def test_bad_options_fail_at_config_time():
    with pytest.raises(ConfigError, match=r"^env.options: tasks: unknown ScienceWorld task"):
        load_config(None, ["env.name=sciworld", "env.options={tasks: [find-unicorn]}"])
    with pytest.raises(ConfigError, match=r"^env.options: .*heap_size"):
        load_config(None, ["env.name=sciworld", "env.options={heap_size: 1g}"])


def java_children() -> set[int]:
    """PIDs of live java processes started by this test process."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if name == "java" and int(rest[1]) == os.getpid() and rest[0] != "Z":
            out.add(int(entry))
    return out


def test_pool_ends_its_jvms_on_close_and_when_dropped(tmp_path):
    import gc

    from empo2.envs import EnvPool

    before = java_children()
    options = {"examples": 0, "examples_cache": str(tmp_path)}
    pool = EnvPool(ScienceWorldEnv, options, max_size=2)
    for e in pool.take(3):
        e.reset("find-non-living-thing/0")
    assert len(java_children() - before) == 2
    pool.close()
    assert java_children() == before
    pool = EnvPool(ScienceWorldEnv, options)
    pool.first().reset("find-non-living-thing/0")
    assert len(java_children() - before) == 1
    del pool  # nobody closed it: its finalizer does
    gc.collect()
    assert java_children() == before


@pytest.mark.slow
def test_a_failed_fit_leaves_no_jvm(tiny_model, tmp_path):
    from conftest import tiny_overrides

    from empo2.fit import fit
    from empo2.iteration_hooks import IterationCallback

    class Explodes(IterationCallback):
        def on_rollout_end(self, ctx, episodes):
            raise RuntimeError("boom after the rollout")

    before = java_children()
    over = {"env.name": "sciworld", "env.options": "{tasks: [find-non-living-thing], examples: 0}",
            "env.max_turns": 1, "rollout.tasks_per_iteration": 1, "rollout.group_size": 2, "mode.p": 0.0}
    with pytest.raises(RuntimeError, match="boom"):
        fit(load_config(None, tiny_overrides(tiny_model, tmp_path, name="boom", **over)), extra_callbacks=[Explodes()])
    assert java_children() == before


def test_turn_caps_admit_every_measured_gold_path():
    """results/sciworld-gold-paths.csv: the simulator's gold paths of every task on the variations a
    run plays by default (bench/sciworld_gold_paths.py). Each task's cap admits its longest one."""
    import csv
    from pathlib import Path

    from scienceworld.constants import TASKS

    from empo2.envs.sciworld import TURN_CAPS

    with (Path(__file__).parents[1] / "results" / "sciworld-gold-paths.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    longest: dict[str, int] = {}
    for r in rows:
        longest[r["task"]] = max(longest.get(r["task"], 0), int(r["gold_path_length"]))
    assert set(longest) == {t["task_name"] for t in TASKS}  # all 30 tasks measured
    short = {t: (n, TURN_CAPS.get(t, ScienceWorldEnv.default_max_turns)) for t, n in longest.items()
             if n > TURN_CAPS.get(t, ScienceWorldEnv.default_max_turns)}
    assert not short, f"caps below the longest gold path (longest, cap): {short}"


@pytest.mark.slow
def test_a_numeric_answer_to_the_simulators_question_goes_through(examples_cache):
    """grow-plant's gold path answers the simulator's "which seed did you mean?" with a number. The
    question reaches the agent as the observation and its number goes through as typed (answering
    the question in the adapter would turn that number into an unrelated action)."""
    env = ScienceWorldEnv(tasks=["grow-plant"], examples=0, examples_cache=str(examples_cache))
    try:
        path = gold_path(env, "grow-plant/0")
        k = next(i for i, a in enumerate(path) if a.strip().isdigit())
        env.reset("grow-plant/0")
        total, result, strays = float(env._score), None, 0
        for i, action in enumerate(path):
            numbered = [a for a in env.valid_actions() if "2" in a.split()]
            if i < k - 1 and numbered and not strays:
                # no question pending: a bare "2" is no action, though "... flower pot 2" shares its word
                stray = env.step("2")
                assert not stray.info["raw_valid"] and stray.info["action"] == "2" and stray.reward == 0.0
                assert stray.observation.startswith(UNKNOWN_ACTION), stray.observation
                strays += 1
            result = env.step(action)
            total += result.reward
            if i == k - 1:
                assert result.observation.startswith("Ambiguous request"), result.observation
            if i == k:
                assert result.info["raw_valid"] and result.info["action"] == action.strip()
            if result.done:
                break
        assert total == 100.0 and result.info["success"] and len(path) <= env.max_turns("grow-plant/0")
        assert strays == 1
    finally:
        env.close()


@pytest.mark.slow
def test_jvms_stepped_on_threads_play_the_serial_trajectories(env, tiny_model, tokenizer, tmp_path):
    """Three JVMs reset and stepped at once: the same episodes as one after another, under one seed
    (the turn's calls go out together; their results are taken in order)."""
    import torch
    from transformers import AutoModelForCausalLM

    from empo2.engines import HFEngine, SamplingParams
    from empo2.episode import Episode
    from empo2.rollout import run_episodes

    engine = HFEngine(AutoModelForCausalLM.from_pretrained(tiny_model), tokenizer)
    envs = [env] + [ScienceWorldEnv(tasks=["find-non-living-thing"], examples=0, examples_cache=str(tmp_path)) for _ in range(2)]
    try:
        played, outside = [], os.environ.get("JAVA_TOOL_OPTIONS")
        for threads in (3, 1):  # the threaded run first: two of its JVMs start on threads
            episodes = [Episode(uid=str(i), instance=f"find-non-living-thing/{i % 2}", group="g") for i in range(4)]
            torch.manual_seed(0)
            run_episodes(envs, episodes, engine, tokenizer, SamplingParams(6, 1.0, ["\n"]), 2048, max_turns=2,
                         env_threads=threads)
            played.append([(ep.error, [(s.response_ids, s.observation, s.reward) for s in ep.steps]) for ep in episodes])
        assert os.environ.get("JAVA_TOOL_OPTIONS") == outside  # each launch put the variable back
        assert all(steps for _, steps in played[0])
        assert played[1] == played[0]
    finally:
        for e in envs[1:]:
            e.close()
