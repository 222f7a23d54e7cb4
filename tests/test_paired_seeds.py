"""`bench/paired_seeds.py`: the pre-registered interval and decision rule, against numbers computed by hand."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("paired_seeds", Path(__file__).parents[1] / "bench" / "paired_seeds.py")
paired_seeds = importlib.util.module_from_spec(spec)
sys.modules["paired_seeds"] = paired_seeds  # its dataclass looks its module up there
spec.loader.exec_module(paired_seeds)


def test_interval_by_hand():
    # differences 0.1, 0.0, 0.2, 0.1: mean 0.1; squared deviations 0, 0.01, 0.01, 0 -> sd = sqrt(0.02 / 3);
    # t(0.975, 3 df) = 3.182446 (tables); half width = 3.182446 * sd / 2
    iv = paired_seeds.paired_interval([0.1, 0.0, 0.2, 0.1])
    sd = math.sqrt(0.02 / 3)
    assert (iv.n, iv.mean, iv.sd) == (4, pytest.approx(0.1, abs=1e-15), pytest.approx(sd, rel=1e-12))
    assert iv.half_width == pytest.approx(3.182446 * sd / 2, rel=1e-6)
    assert (iv.low, iv.high) == (pytest.approx(0.1 - 3.182446 * sd / 2, rel=1e-6), pytest.approx(0.1 + 3.182446 * sd / 2, rel=1e-6))


def test_ten_seeds_use_the_preregistered_multiplier():
    # ten differences alternating 1 and 3: mean 2, sd = sqrt(10 / 9); the pre-registration's t is 2.262
    iv = paired_seeds.paired_interval([1.0, 3.0] * 5)
    assert iv.half_width / (math.sqrt(10 / 9) / math.sqrt(10)) == pytest.approx(2.262, abs=5e-4)


def test_one_seed_has_no_interval_and_none_is_an_error():
    iv = paired_seeds.paired_interval([0.3])
    assert iv.mean == 0.3 and math.isinf(iv.half_width)
    assert paired_seeds.verdict(iv, 0.05) == "inconclusive"
    with pytest.raises(ValueError, match="no seed has finished"):
        paired_seeds.paired_interval([])


@pytest.mark.parametrize("mean, half, expected", [
    (0.10, 0.05, "helps"),           # [0.05, 0.15]: above 0
    (-0.10, 0.05, "hurts"),          # [-0.15, -0.05]: below 0
    (0.01, 0.03, "no difference"),   # [-0.02, 0.04]: contains 0, within ±0.05
    (0.01, 0.05, "inconclusive"),    # [-0.04, 0.06]: contains 0, reaches past +0.05
    (0.0, 0.05, "no difference"),    # [-0.05, 0.05]: the margin itself counts as within
])
def test_decision_rule(mean, half, expected):
    iv = paired_seeds.PairedInterval(n=10, mean=mean, sd=1.0, half_width=half)
    assert paired_seeds.verdict(iv, margin=0.05) == expected


def test_report_pairs_seeds_and_marks_interim_verdicts():
    rows = [{"method": m, "task": "keyroom", "seed": s, "return": 0.0, "success_rate": v}
            for m, vals in {"grpo": [0.2, 0.3, 0.1], "empo2-split": [0.3, 0.4, 0.2], "empo2": [0.1]}.items()
            for s, v in enumerate(vals)]
    lines = paired_seeds.report(rows, "success_rate", 0.05)
    split = next(line for line in lines if line.startswith("| empo2-split − grpo"))
    # D = 0.1 at each of 3 seeds: sd 0, interval [0.1, 0.1], helps, but only 3 of 10 seeds
    assert "| 3 |" in split and "interim: helps" in split and "+0.100" in split
    paper = next(line for line in lines if line.startswith("| empo2 − grpo"))
    assert "| 1 |" in paper and "interim: inconclusive" in paper
    assert not any(line.startswith("| empo2-split-trace") for line in lines)  # no finished cells: no row


def test_cells_table_lists_every_seed_and_the_mean_of_those_finished():
    rows = [{"method": m, "task": "keyroom", "seed": s, "return": v, "success_rate": 0.0}
            for m, vals in {"grpo": {0: 31.25, 2: -10.0}, "empo2": {1: 40.0}}.items() for s, v in vals.items()]
    lines = paired_seeds.cells_table(rows, "return")
    assert lines[0].startswith("| method | s0 | s1 |") and lines[0].count("| s") == paired_seeds.SEEDS
    # grpo: seeds 0 and 2 finished, mean (31.25 - 10) / 2 = 10.625 -> 10.62 at two decimals (round half even)
    assert lines[2] == "| grpo | 31.25 | · | -10.00 | " + " | ".join("·" * 7) + " | 10.62 (2) |"
    assert lines[3] == "| empo2 | · | 40.00 | " + " | ".join("·" * 8) + " | 40.00 (1) |"
