"""EMPO2Module: old log-probs match the training forward; checkpoints hold what they should."""

import csv

import pytest
import torch

from empo2.config import load_config
from empo2.fit import fit
from empo2.update_stats import UpdateStats

from conftest import tiny_overrides

pytestmark = pytest.mark.isa  # run again under an AVX2 cap (make test-isa)


@pytest.mark.slow
@pytest.mark.parametrize("precision, recompute", [("32-true", False), ("bf16-mixed", False), ("bf16-mixed", True)],
                         ids=["fp32", "bf16", "bf16-checkpointing"])
def test_first_update_sees_ratio_one(warm_model, tmp_path, precision, recompute):
    # One mini-batch per iteration: every ratio is taken before the optimizer step, so it must be 1
    # (old log-probs recomputed by the trainer, under the same precision context as the update; with
    # activation checkpointing, as the CPU configs ship, the forward that gives the ratio is the same).
    # Micro-batches of 2 rows: a row's bf16 log-probs move with its batch-mates' padding on some CPUs
    # and shapes (an old-log-prob pass cut differently from the update gave ratio_max 1.0007 on an
    # AMX CPU, ratio_mean 0.99997 on an AVX2-only one), so this also checks that both passes forward
    # the same micro-batches.
    over = {"trainer.precision": precision, "trainer.max_epochs": 1, "optim.mini_batch_size": 1000,
            "optim.micro_batch_size": 2, "model.gradient_checkpointing": recompute}
    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="r", **over)))
    with (tmp_path / "r" / "logs" / "metrics.csv").open() as fh:
        row = next(csv.DictReader(fh))
    assert float(row["train/optimizer_steps"]) == 1
    assert float(row["train/ratio_max"]) == pytest.approx(1.0, abs=1e-5)
    assert float(row["train/ratio_mean"]) == pytest.approx(1.0, abs=1e-6)
    assert float(row["train/clip_frac"]) == 0.0
    assert float(row["train/grad_norm"]) > 0


def test_rank_stats_combine_shares_not_means():
    # Rank 0 trained 6 tokens (ratios summing to 6.3, 2 clipped), rank 1 none (it had no rows). Both
    # took the same 2 optimizer steps over the 6 tokens of all ranks; rank 0 ran 3.0 s, rank 1 1.0 s.
    busy = UpdateStats(steps=2, grad_norm_sum=1.5, counted_tokens=6, ratio_max=1.2, update_s=3.0,
                       ratio_sum=6.3, clipped=2, loss_sum=-0.25, real_tokens=40, padded_tokens=50)
    idle = UpdateStats(steps=2, grad_norm_sum=1.5, counted_tokens=6, update_s=1.0)
    both = UpdateStats.combine([busy, idle])
    assert both == busy  # the idle rank adds nothing and shares the step count, norm and token count
    m = both.metrics()
    assert m["train/ratio_mean"] == pytest.approx(1.05)  # a mean of the ranks' means said 0.525
    assert m["train/clip_frac"] == pytest.approx(2 / 6) and m["train/loss"] == pytest.approx(-0.125)
    assert m["train/grad_norm"] == pytest.approx(0.75) and m["train/padding_share"] == pytest.approx(0.2)
    assert m["train/trained_tokens_per_s"] == pytest.approx(40 / 3.0)
    halves = UpdateStats.combine([UpdateStats(steps=2, loss_sum=-0.1, ratio_sum=3.0, counted_tokens=6),
                                  UpdateStats(steps=2, loss_sum=-0.15, ratio_sum=3.3, counted_tokens=6)])
    assert halves.loss_sum == pytest.approx(-0.25) and halves.ratio_sum == pytest.approx(6.3)  # shares add


@pytest.mark.slow
def test_lora_checkpoint_holds_only_adapters(warm_model, tmp_path):
    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="l", **{"trainer.max_epochs": 1})))
    ckpt = torch.load(tmp_path / "l" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    keys = list(ckpt["state_dict"])
    assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys)
    assert ckpt["RolloutDataModule"]["next_iteration"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_kl_to_reference_starts_at_zero_and_stays_out_of_checkpoints(warm_model, tmp_path, lora):
    # One optimizer step per iteration: the first one is taken while the policy still equals the
    # reference (LoRA: adapters off; full: the frozen copy), so its KL is 0; after it, KL > 0.
    over = {"model.lora.enabled": lora, "algo.kl_coef": 0.5, "trainer.max_epochs": 2, "optim.mini_batch_size": 1000,
            "optim.lr": 1e-3}
    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="kl", **over)))
    with (tmp_path / "kl" / "logs" / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[0]["train/kl"]) == pytest.approx(0.0, abs=1e-6)
    assert float(rows[1]["train/kl"]) > 1e-6
    ckpt = torch.load(tmp_path / "kl" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert not any("reference" in k or "_frozen" in k for k in ckpt["state_dict"])
