"""`memory.tip_source: trace`: tips from the episode's own record by hand-checked rules, and a fit that
stores them; the default (`model`) is the policy writing its tips, as before."""

import json

import pytest

from empo2.episode import Episode, Step
from empo2.trace_tips import trace_tip


def episode(*steps):
    ep = Episode(uid="0-0-0", instance="find/0", group="g")
    ep.steps = [Step([1], [2], [0.0], action, action, "obs", reward, info=dict(info)) for action, reward, info in steps]
    return ep


def test_trace_tips_by_hand():
    # ScienceWorld-like: +50 for the right room, then a wrong focus costing 100; the score is reported
    ep = episode(("look around", 0.0, {"score": 0}), ("go to kitchen", 50.0, {"score": 50}),
                 ("focus on ball", -100.0, {"score": -50}))
    assert trace_tip(ep) == "Final score -50. Scored: go to kitchen (+50). Lost points: focus on ball (-100)."
    # no score reported: the extrinsic return stands in; a repeated scoring action counts each time
    ep = episode(("open door", 10.0, {}), ("open door", 10.0, {}), ("focus on key", 80.0, {}))
    assert trace_tip(ep) == "Final score 100. Scored: open door (+10); open door (+10); focus on key (+80)."
    # nothing changed the score (the novelty bonus is not a reward here)
    ep = episode(("look around", 0.0, {}), ("inventory", 0.0, {}))
    ep.steps[0].intrinsic = 1.0
    assert trace_tip(ep) == "Final score 0. No action changed the score in 2 steps."
    # a format penalty is part of the step's reward
    assert trace_tip(episode(("???", -0.5, {}))) == "Final score -0.5. Lost points: ??? (-0.5)."
    assert trace_tip(episode()) == ""


@pytest.mark.slow
def test_a_fit_with_trace_tips_stores_them(warm_model, tmp_path):
    from empo2.config import load_config
    from empo2.fit import fit
    from empo2.memory import MemoryStore, memory_dir

    from conftest import tiny_overrides

    over = {"trainer.max_epochs": 1, "mode.p": 1.0, "mode.q": 0.5, "memory.tip_source": "trace"}
    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="trace", **over)))
    run = tmp_path / "trace"
    episodes = [json.loads(line) for line in (run / "trajectories" / "iter_00000.jsonl").open()]
    assert episodes and all(e["tip"].startswith("Final score ") for e in episodes)
    for e in episodes:  # each tip is the rule applied to the episode as played
        ep = episode(*[(s["action"], s["reward"], s["info"]) for s in e["steps"]])
        assert e["tip"] == trace_tip(ep)
    store = MemoryStore(memory_dir(run))
    stored = [c for slot in store.counts() for c in store.table.rows(slot).contents]
    assert stored and all(c.startswith("Final score ") for c in stored)


def test_the_paper_writer_stays_the_default():
    from empo2.config import load_config

    assert load_config(None, []).memory.tip_source == "model"
