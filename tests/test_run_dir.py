"""A run directory you can trust: stale artefacts refuse a fresh run; a copied folder resumes into
its own last.ckpt."""

import shutil

import pytest

from empo2.config import ConfigError, load_config
from empo2.fit import fit

from conftest import tiny_overrides
from test_fit import read_metrics


def test_fresh_run_refuses_a_dead_runs_artefacts(tmp_path):
    """A run that died before its first checkpoint left trajectories and memory behind."""
    run = tmp_path / "run"
    (run / "trajectories").mkdir(parents=True)
    (run / "trajectories" / "iter_00000.jsonl").write_text("{}\n")
    (run / "memory").mkdir()
    (run / "memory" / "tips.lance").mkdir()
    with pytest.raises(ConfigError, match=r"holds another run's memory, trajectories but no checkpoint.*name="):
        fit(load_config(None, [f"out_dir={tmp_path}", "name=run"]))
    assert sorted(p.name for p in run.iterdir()) == ["memory", "trajectories"]  # nothing written or removed
    assert (run / "trajectories" / "iter_00000.jsonl").read_text() == "{}\n"


@pytest.mark.slow
def test_copied_folder_resumes_into_its_own_last_checkpoint(warm_model, tmp_path):
    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="a", **{"trainer.max_epochs": 1})))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for epochs in (2, 3):
        fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="b", ckpt_path="last",
                                             **{"trainer.max_epochs": epochs})))
    ckpts = sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and not any("-v" in name for name in ckpts), ckpts
    assert [r["iteration"] for r in read_metrics(tmp_path / "b")] == ["0.0", "1.0", "2.0"]  # none redone
