"""`bench/paired_episodes.py`: two methods' held-out episodes paired by position, checked against
numbers computed by hand, on episode files written the way `bench/publish_comparison.py` writes them."""

import gzip
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("paired_episodes", Path(__file__).parents[1] / "bench" / "paired_episodes.py")
paired_episodes = importlib.util.module_from_spec(spec)
sys.modules["paired_episodes"] = paired_episodes  # its dataclass looks its module up there
spec.loader.exec_module(paired_episodes)


def test_paired_difference_by_hand():
    # differences 0, 4, 0, 4: mean 2; sample variance (4+4+4+4)/3 = 16/3; se = sqrt(16/3)/sqrt(4) = sqrt(4/3)
    p = paired_episodes.paired_episode_difference([10.0, 4.0, 5.0, 9.0], [10.0, 0.0, 5.0, 5.0])
    assert (p.pairs, p.differing) == (4, 2)
    assert p.mean == pytest.approx(2.0, abs=1e-12)
    assert p.standard_error == pytest.approx(math.sqrt(4 / 3), rel=1e-12)
    assert p.t == pytest.approx(2.0 / math.sqrt(4 / 3), rel=1e-12)
    # identical outcomes: no gap and no noise, t is 0 rather than a division by zero
    same = paired_episodes.paired_episode_difference([1.0, 1.0], [1.0, 1.0])
    assert (same.differing, same.mean, same.standard_error, same.t) == (0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="cannot pair 2 episodes with 1"):
        paired_episodes.paired_episode_difference([1.0, 2.0], [1.0])


def _write(folder: Path, stem: str, episodes: list[tuple[str, float, bool]]) -> Path:
    path = folder / "episodes" / f"{stem}-eval.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        for instance, ret, success in episodes:
            fh.write(json.dumps({"instance": instance, "return": ret, "success": success, "steps": []}) + "\n")
    return path


def test_report_pairs_seeds_and_pools_them(tmp_path, capsys):
    _write(tmp_path, "grpo-seed0", [("t/1", 10.0, False), ("t/2", 0.0, False)])
    _write(tmp_path, "empo2-seed0", [("t/1", 10.0, False), ("t/2", 6.0, True)])
    _write(tmp_path, "grpo-seed1", [("t/1", 5.0, False), ("t/2", 5.0, True)])
    _write(tmp_path, "empo2-seed1", [("t/1", 3.0, False), ("t/2", 5.0, True)])
    _write(tmp_path, "empo2-split-seed0", [("t/1", 99.0, True), ("t/2", 99.0, True)])  # another method's file
    assert paired_episodes.main([str(tmp_path), "--method", "empo2"]) == 0
    out = capsys.readouterr().out.splitlines()
    # seed 0: differences 0, 6 -> mean 3, sd sqrt(18), se sqrt(18)/sqrt(2) = 3, t 1
    assert out[2] == "0            2         1   +3.000  3.000  +1.00"
    # seed 1: differences -2, 0 -> mean -1, sd sqrt(2), se 1, t -1
    assert out[3] == "1            2         1   -1.000  1.000  -1.00"
    # pooled 0, 6, -2, 0: mean 1; deviations -1, 5, -3, -1 -> variance 36/3 = 12; se sqrt(12)/2 = sqrt(3)
    assert out[4] == f"pooled       4         2   +1.000  {math.sqrt(3):.3f}  {1 / math.sqrt(3):+.2f}"
    assert paired_episodes.main([str(tmp_path), "--method", "empo2", "--key", "success"]) == 0
    # success as 0/1: seed 0 differences 0, 1 -> mean 0.5, se 0.5
    assert capsys.readouterr().out.splitlines()[2] == "0            2         1   +0.500  0.500  +1.00"


def test_report_refuses_what_it_cannot_pair(tmp_path, capsys):
    assert paired_episodes.main([str(tmp_path), "--method", "empo2"]) == 2
    assert "no seed with evaluation episodes of both 'empo2' and 'grpo'" in capsys.readouterr().err
    _write(tmp_path, "grpo-seed0", [("t/1", 1.0, False), ("t/2", 1.0, False)])
    _write(tmp_path, "empo2-seed0", [("t/2", 1.0, False), ("t/1", 1.0, False)])
    assert paired_episodes.main([str(tmp_path), "--method", "empo2"]) == 2
    assert "did not play the same instances in the same order" in capsys.readouterr().err
