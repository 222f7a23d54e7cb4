"""EMPO2Module: old log-probs match the training forward; checkpoints hold what they should."""

import csv

import pytest
import torch

from empo2.config import load_config
from empo2.fit import fit

from conftest import tiny_overrides


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_first_update_sees_ratio_one(warm_model, tmp_path, precision):
    # One mini-batch per iteration: every ratio is taken before the optimizer step, so it must be 1
    # (old log-probs recomputed by the trainer, under the same precision context as the update).
    over = {"trainer.precision": precision, "trainer.max_epochs": 1, "optim.mini_batch_size": 1000}
    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="r", **over)))
    with (tmp_path / "r" / "logs" / "metrics.csv").open() as fh:
        row = next(csv.DictReader(fh))
    assert float(row["train/optimizer_steps"]) == 1
    assert float(row["train/ratio_max"]) == pytest.approx(1.0, abs=1e-5)
    assert float(row["train/ratio_mean"]) == pytest.approx(1.0, abs=1e-6)
    assert float(row["train/clip_frac"]) == 0.0
    assert float(row["train/grad_norm"]) > 0


@pytest.mark.slow
def test_lora_checkpoint_holds_only_adapters(warm_model, tmp_path):
    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="l", **{"trainer.max_epochs": 1})))
    ckpt = torch.load(tmp_path / "l" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    keys = list(ckpt["state_dict"])
    assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys)
    assert ckpt["RolloutDataModule"]["next_iteration"] == 1
