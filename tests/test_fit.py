"""End to end: a short fit writes what it promises; resume is exact; a fresh run never clobbers."""

import csv
import json
from pathlib import Path

import pytest

from empo2.config import ConfigError, load_config
from empo2.fit import fit, main

from conftest import tiny_overrides

# Timings, throughputs and memory peaks differ run to run; everything else must match exactly.
VOLATILE = ("time/", "_per_s", "peak_rss_mb", "peak_cuda_mb")


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "logs" / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


def stable(rows):
    return [{k: v for k, v in r.items() if not any(s in k for s in VOLATILE)} for r in rows]


@pytest.mark.slow
def test_fit_writes_metrics_checkpoint_trajectories(warm_model, tmp_path):
    assert main(tiny_overrides(warm_model, tmp_path, name="run")) == 0
    run = tmp_path / "run"
    rows = read_metrics(run)
    assert [r["iteration"] for r in rows] == ["0.0", "1.0"]
    for r in rows:
        for key in ("rollout/return", "rollout/success_rate", "rollout/episode_length", "train/loss",
                    "train/clip_frac", "train/grad_norm", "rollout/gen_tokens_per_s", "time/rollout_s",
                    "time/update_s", "train/engine_logprob_gap"):
            value = float(r[key])
            assert value == value and abs(value) != float("inf"), key
        assert float(r["train/engine_logprob_gap"]) < 1e-3  # engine and trainer agree
        assert float(r["train/optimizer_steps"]) >= 1
        phases = [float(r[f"memory/{p}_peak_rss_mb"]) for p in ("rollout", "tips", "old_logprob", "update")]
        assert min(phases) > 100 and float(r["memory/peak_rss_mb"]) == max(phases)  # a real model is resident
    last = run / "checkpoints" / "last.ckpt"
    # last.ckpt names the newest periodic checkpoint (checkpoint.keep=1 keeps only it) instead of
    # holding a second copy of it
    assert last.is_symlink() and last.is_file()
    assert sorted(p.name for p in last.parent.iterdir()) == ["iter_00001.ckpt", "last.ckpt"]
    assert last.resolve() == (run / "checkpoints" / "iter_00001.ckpt").resolve()
    assert (run / "config.yaml").is_file()
    episodes = [json.loads(line) for line in (run / "trajectories" / "iter_00001.jsonl").open()]
    assert len(episodes) == 8 and all(ep["steps"] for ep in episodes)
    groups = {}
    for ep in episodes:
        groups.setdefault(ep["group"], []).append(ep["advantage"])
    assert len(groups) == 2 and all(abs(sum(a)) < 1e-6 for a in groups.values())  # GRPO: zero-mean groups
    # A fresh run into the same directory is refused rather than overwriting it.
    with pytest.raises(ConfigError, match="ckpt_path=last"):
        fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="run")))


MEMORY_MODES = {"mode.p": 1.0, "mode.q": 0.5, "mode.granularity": "group", "env.train_instances": "[find/0,find/1]"}


@pytest.mark.slow
@pytest.mark.parametrize("lora, extra", [(True, {}), (False, {}), (True, MEMORY_MODES)], ids=["lora", "full", "memory"])
def test_resume_is_exact(warm_model, tmp_path, lora, extra):
    over = {"model.lora.enabled": lora, "trainer.max_epochs": 4, **extra}
    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="straight", **over)))
    over2 = dict(over, **{"trainer.max_epochs": 2})
    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="resumed", **over2)))
    over3 = dict(over, ckpt_path="last")
    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="resumed", **over3)))
    straight, resumed = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert len(straight) == len(resumed) == 4
    assert stable(straight) == stable(resumed)
    # The learning signal was not trivially zero (the comparison could otherwise not fail).
    assert any(float(r["train/grad_norm"]) > 0 for r in straight)
    if extra:  # memory modes ran, retrieved tips, and the novelty bonus was paid
        assert any(float(r["mode/off_policy"]) > 0 for r in straight)
        assert any(float(r["memory/tips_per_retrieval"]) > 0 for r in straight[2:])
        assert any(float(r["rollout/intrinsic_return"]) > 0 for r in straight)
        # memory starts empty, so no retrieval of iteration 0 finds its instance's slot; a retrieved tip needs one
        assert float(straight[0]["memory/retrievals_without_slot"]) == 1.0
        assert all(float(r["memory/retrievals_without_slot"]) < 1.0 for r in straight if float(r["memory/tips_per_retrieval"]) > 0)
    for k in range(4):
        a = (tmp_path / "straight" / "trajectories" / f"iter_{k:05d}.jsonl").read_text()
        b = (tmp_path / "resumed" / "trajectories" / f"iter_{k:05d}.jsonl").read_text()
        assert a == b


def test_missing_checkpoint_and_model_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint at"):
        fit(load_config(None, [f"out_dir={tmp_path}", "ckpt_path=last"]))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        fit(load_config(None, [f"out_dir={tmp_path}", f"model.name_or_path={tmp_path}"]))


@pytest.mark.slow
def test_p_zero_is_exactly_grpo(warm_model, tmp_path):
    # With p = 0 tips are still written (every mode writes) but never read: the updates must be
    # exactly those of a trainer without any memory.
    common = {"mode.p": 0.0, "intrinsic.kind": "none", "trainer.max_epochs": 2}
    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="p0", **common)))
    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="grpo", **common, **{"memory.enabled": False})))
    with_memory, without = read_metrics(tmp_path / "p0"), read_metrics(tmp_path / "grpo")
    keys = [k for k in without[0] if k.startswith(("rollout/return", "rollout/success", "train/")) and "_per_s" not in k]
    assert [{k: r[k] for k in keys} for r in with_memory] == [{k: r[k] for k in keys} for r in without]
    assert float(with_memory[-1]["memory/entries"]) > 0 and float(with_memory[-1]["mode/on_policy"]) == 1.0
