"""GRPO learns: on two fixed KeyRoom houses, mean return rises within a CPU-friendly budget.

The tiny model starts as a uniformly random agent over valid actions (see conftest), so most early
episodes end with a wrong `focus on` (−100). GRPO should first learn to stop doing that and to walk
into the target's room (+50): a rise of well over 50 points in a dozen iterations (~30 s).
"""

import csv

import pytest

from empo2.config import load_config
from empo2.fit import fit

from conftest import tiny_overrides


@pytest.mark.slow
def test_mean_return_rises(warm_model, tmp_path):
    over = {
        "trainer.max_epochs": 12, "rollout.group_size": 8, "env.train_instances": "[find/0,find/1]",
        "model.lora.enabled": False, "optim.lr": 1e-3, "optim.mini_batch_size": 16, "optim.micro_batch_size": 16,
    }
    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="learn", **over)))
    with (tmp_path / "learn" / "logs" / "metrics.csv").open() as fh:
        returns = [float(r["rollout/return"]) for r in csv.DictReader(fh)]
    first, last = sum(returns[:3]) / 3, sum(returns[-3:]) / 3
    assert len(returns) == 12
    assert last - first >= 50, returns
    assert last > 0, returns
