"""Adaptation with memory only: no weight changes, memory grows as specified, iteration 0 has none."""

import csv
import json
import re

import lightning as L
import pytest
import torch
from PIL import Image

from empo2.adapt import adapt, adaptation_config, fresh_dir, parse_overrides, summary_line
from empo2.config import ConfigError, load_config
from empo2.fit import fit
from empo2.memory import MemoryStore, memory_dir
from empo2.module import EMPO2Module

from conftest import tiny_overrides


def test_adaptation_config_retargets_and_freezes(tiny_model, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_model, tmp_path, name="src", **{
        "adapt.target_task": "find-here", "adapt.iterations": 3, "mode.p": 0.0, "memory.enabled": False}))
    a = adaptation_config(cfg)
    assert a.env.options["target_in_start_room"] is True  # KeyRoom's other task
    assert (a.mode.p, a.mode.q, a.memory.enabled, a.intrinsic.kind) == (1.0, 0.0, True, "none")
    assert a.trainer["max_epochs"] == 3 and a.run_dir == tmp_path / "src" / "adapt" / "find-here-seed0"
    with pytest.raises(ConfigError, match="adapt.target_task"):
        adaptation_config(load_config(None, tiny_overrides(tiny_model, tmp_path, **{"adapt.target_task": "swim"})))
    assert parse_overrides(["target_task=x", "seed=1"]) == ["adapt.target_task=x", "seed=1"]


def test_fresh_dir_moves_an_old_folder_aside(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep.txt").write_text("old run")
    fresh_dir(tmp_path / "a")
    assert (tmp_path / "a.1" / "keep.txt").read_text() == "old run" and not any((tmp_path / "a").iterdir())


@pytest.mark.slow
def test_adaptation_changes_no_weight_and_grows_memory(warm_model, tmp_path):
    over = tiny_overrides(warm_model, tmp_path, name="src", **{"trainer.max_epochs": 1})
    fit(load_config(None, over))
    ckpt = tmp_path / "src" / "checkpoints" / "last.ckpt"
    cfg = load_config(None, over + ["ckpt_path=last"])
    before = {k: v.clone() for k, v in EMPO2Module.from_checkpoint(cfg, str(ckpt)).state_dict().items()}

    # Every iteration plays all 8 instances (memory slots are per instance, so iteration 1 meets
    # the instances whose tips iteration 0 wrote).
    rows, run, module = adapt(load_config(None, over + [
        "ckpt_path=last", "adapt.target_task=find-here", "adapt.iterations=2",
        "rollout.tasks_per_iteration=8", "rollout.group_size=2"]))
    assert run == tmp_path / "src" / "adapt" / "find-here-seed0"
    # The policy the loop ran is bitwise the checkpoint's (the module has no optimizer at all).
    after = module.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert not any(p.requires_grad for p in module.parameters())  # nothing an optimizer could change

    with (run / "adaptation.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [int(r["iteration"]) for r in table] == [0, 1]
    episodes = [[json.loads(line) for line in (run / "trajectories" / f"iter_{k:05d}.jsonl").open()] for k in range(2)]
    assert all(ep["mode"] == "on_policy" and all(not s["tips"] for s in ep["steps"]) for ep in episodes[0])
    assert all(ep["mode"] == "on_policy_memory" for ep in episodes[1])
    assert any(s["tips"] for ep in episodes[1] for s in ep["steps"])  # iteration 1 retrieved iteration 0's tips
    # Memory grows by one entry per step of every episode with a tip (distinct entries), iteration by iteration.
    written = [sum(len(ep["steps"]) for ep in eps if ep["tip"]) for eps in episodes]
    entries = [float(r["memory_entries"]) for r in table]
    assert 0 < entries[0] <= written[0] and entries[0] < entries[1] <= written[0] + written[1]
    assert sum(MemoryStore(memory_dir(run)).counts().values()) == entries[1]
    # The target task was played: KeyRoom's find-here puts the target in the hallway.
    for ep in episodes[0]:
        target = re.search(r"find the (.+?) and focus", ep["first_observation"]).group(1)
        assert target in re.search(r"You see: (.*?)\.", ep["first_observation"]).group(1)
    png = Image.open(run / "adaptation.png")
    assert png.size[0] > 100 and "adaptation iteration" in png.text["Axes"]
    assert (run / "logs" / "learning_curves.png").is_file() and (run / "trajectories" / "index.html").is_file()


def test_paper_pairs_presets_load(tmp_path):
    """conf/adapt/ holds the three ScienceWorld pairs of EMPO2.md §8, each a valid adaptation."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    presets = sorted((root / "conf" / "adapt").glob("*.yaml"))
    assert len(presets) == 3
    for preset in presets:
        source, target = preset.stem.split("--")
        cfg = load_config([root / "conf" / "sciworld.yaml", preset], [f"out_dir={tmp_path}"])
        assert cfg.env.options["tasks"] == [source] and cfg.adapt.target_task == target
        assert adaptation_config(cfg).env.options["tasks"] == [target]


def test_summary_says_when_no_tip_was_retrieved():
    def row(memory, ret, tips):
        return {"memory": memory, "return": ret, "tips_per_retrieval": tips}

    silent = summary_line([row(False, -10.0, 0.0), row(True, -5.0, 0.0), row(True, -7.0, 0.0)])
    assert silent.startswith("no tip was retrieved in any iteration") and "%" not in silent
    assert summary_line([row(False, -10.0, 0.0), row(True, -5.0, 2.5), row(True, -8.0, 1.5)]) == \
        "best return with memory vs iteration 0: +50.0%; 2.00 tips per retrieval on average"
    assert summary_line([row(False, 0.0, 0.0), row(True, 5.0, 2.0)]) == \
        "best return with memory vs iteration 0: +5.00 (iteration 0 returned 0); 2.00 tips per retrieval on average"


def _episodes(run, k):
    return [json.loads(line) for line in (run / "trajectories" / f"iter_{k:05d}.jsonl").open()]


class CrashAtIteration(L.Callback):
    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.iteration:
            raise RuntimeError("simulated crash")


def test_a_stopped_adaptation_continues_as_a_straight_run_would(warm_model, tmp_path):
    """Crashed at the start of iteration 1 of 2 and continued (`resume=True`), the adaptation plays
    iteration 1 exactly as a straight run does: same responses, same tips retrieved, same memory;
    iteration 0's episodes and logged row are the ones from before the crash, and the checkpoint it
    continued from (written after iteration 0) holds no weights."""
    def cfg(name, iterations):
        return load_config(None, tiny_overrides(warm_model, tmp_path, name=name, **{
            "adapt.target_task": "find-here", "adapt.iterations": iterations,
            "rollout.tasks_per_iteration": 8, "rollout.group_size": 2}))

    straight, straight_run, _ = adapt(cfg("straight", 2))
    with pytest.raises(RuntimeError, match="simulated crash"):  # nothing to continue yet: a fresh run
        adapt(cfg("stopped", 2), resume=True, extra_callbacks=[CrashAtIteration(1)])
    run = straight_run.parents[2] / "stopped" / "adapt" / straight_run.name
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["state_dict"] == {} and ckpt["AdaptationData"]["next_iteration"] == 1
    first = run / "trajectories" / "iter_00000.jsonl"
    stamp = first.stat().st_mtime_ns
    continued, run2, _ = adapt(cfg("stopped", 2), resume=True)
    assert run2 == run and first.stat().st_mtime_ns == stamp and not run.with_name(run.name + ".1").exists()
    assert [(r["iteration"], r["return"], r["success_rate"]) for r in continued] == \
        [(r["iteration"], r["return"], r["success_rate"]) for r in straight]

    def played(run_dir):
        return [[(s["response"], tuple(s["tips"])) for s in ep["steps"]] for ep in _episodes(run_dir, 1)]

    assert played(run) == played(straight_run) and any(s[1] for ep in played(run) for s in ep)
    assert MemoryStore(memory_dir(run)).counts() == MemoryStore(memory_dir(straight_run)).counts()
    # Without resume an existing folder is still moved aside, never continued.
    adapt(cfg("stopped", 1))
    assert run.with_name(run.name + ".1").is_dir()
