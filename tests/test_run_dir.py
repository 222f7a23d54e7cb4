"""A run directory you can trust: stale artefacts refuse a fresh run; a copied folder resumes into
its own last.ckpt."""

import shutil
import tempfile

import lightning as L
import pytest

from empo2.config import ConfigError, load_config
from empo2.fit import drop_checkpoints_after, fit

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


class TempDirProbe(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        self.seen = tempfile.gettempdir()


@pytest.mark.slow
def test_copied_folder_resumes_into_its_own_last_checkpoint(warm_model, tmp_path):
    """Also: the leftovers of a run killed while writing a checkpoint (a partial temp file, a
    periodic checkpoint newer than last.ckpt) are gone after the next start."""
    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="a", **{"trainer.max_epochs": 1})))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    run = tmp_path / "b"
    (run / ".tmp" / "rank0" / "tmpk1lled").write_bytes(b"half a checkpoint")
    shutil.copy(run / "checkpoints" / "last.ckpt", run / "checkpoints" / "iter_00007.ckpt")
    probe = TempDirProbe()
    for epochs in (2, 3):
        fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="b", ckpt_path="last",
                                             **{"trainer.max_epochs": epochs})), extra_callbacks=[probe])
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and not any("-v" in name for name in ckpts), ckpts
    assert "iter_00007.ckpt" not in ckpts  # from "after" last.ckpt: dropped on resume
    assert [r["iteration"] for r in read_metrics(run)] == ["0.0", "1.0", "2.0"]  # none redone
    assert probe.seen == str(run / ".tmp" / "rank0") and not (run / ".tmp" / "rank0" / "tmpk1lled").exists()
    assert tempfile.gettempdir() != probe.seen  # restored after fit


def test_checkpoints_after_the_resumed_iteration_are_dropped(tmp_path):
    for name in ("iter_00001.ckpt", "iter_00003.ckpt", "last.ckpt", "iter_00002.ckpt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "iter_00004").mkdir()  # a sharded checkpoint is a folder
    dropped = drop_checkpoints_after(tmp_path, 3)
    assert sorted(p.name for p in dropped) == ["iter_00003.ckpt", "iter_00004"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_00001.ckpt", "iter_00002.ckpt", "last.ckpt"]


def test_the_checkpoint_reader_looks_where_lightning_keeps_the_datamodule_state():
    from datamodules import RolloutDataModule
    from empo2.checkpoint import DATAMODULE_STATE

    assert RolloutDataModule.__qualname__ == DATAMODULE_STATE


def test_the_checkpoint_reader_finds_a_subclass_datamodule_state():
    from empo2.checkpoint import datamodule_state

    ours = {"next_iteration": 3, "sampler": {"state": 1}}
    assert datamodule_state({"RolloutDataModule": ours, "epoch": 2}) is ours
    assert datamodule_state({"AdaptationData": ours, "callbacks": {"x": {"version": 4}}}) is ours
    assert datamodule_state({"callbacks": {}, "other": {"next_iteration": 1}}) is None
