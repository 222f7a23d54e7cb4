"""`bench/memory_path.py`: the per-iteration memory-path record read from a training CSV, checked
on a CSV written by hand (the columns the trainer logs; Lightning also writes rows without an epoch)."""

import importlib.util
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("memory_path", Path(__file__).parents[1] / "bench" / "memory_path.py")
memory_path = importlib.util.module_from_spec(spec)
sys.modules["memory_path"] = memory_path  # its dataclass looks its module up there
spec.loader.exec_module(memory_path)

HEADER = ("epoch,iteration,step,mode/off_policy,mode/on_policy,mode/on_policy_memory,memory/tips_per_retrieval,"
          "train/masked_token_frac,rollout/raw_valid_action_rate,rollout/return,rollout/intrinsic_return\n")


def test_memory_path_counts_draws_and_tips_by_hand(tmp_path, capsys):
    csv = tmp_path / "empo2-seed0-training.csv"
    csv.write_text(HEADER
                   + "1,1.0,7,0.0,0.0,1.0,4.0,0.0,0.5,10.0,1.0\n"    # on-policy with memory, 4 tips per retrieval
                   + ",,8,,,,,,,,\n"                                # a per-step row: no epoch, iteration or mode
                   + "0,0.0,3,1.0,0.0,0.0,0.0,0.02,0.9,-5.0,2.0\n"   # off-policy into an empty memory
                   + "2,2.0,11,1.0,0.0,0.0,6.0,0.30,0.4,20.0,3.0\n"  # off-policy with 6 tips per retrieval
                   + "3,3.0,15,0.0,1.0,0.0,0.0,0.0,0.8,30.0,1.5\n")
    its = memory_path.read_iterations(csv)
    assert [(it.iteration, it.mode) for it in its] == [
        (0, "off_policy"), (1, "on_policy_memory"), (2, "off_policy"), (3, "on_policy")]
    assert [it.used_memory for it in its] == [False, True, True, False]
    # 3 of 4 iterations drew memory; 2 carried tips; their masked shares 0.0 and 0.30 average to 15.0%
    assert memory_path.summary_line(its) == (
        "memory modes in 3 of 4 iterations (on_policy_memory 1, off_policy 2); "
        "2 of them with tips in the prompts; masked 15.0% of trained tokens where tips were carried")
    assert memory_path.main([str(csv)]) == 0
    assert "   2  off_policy              6.0     30.0    40.0    20.00   3.00" in capsys.readouterr().out


def test_cell_row_by_hand(tmp_path, capsys):
    csv = tmp_path / "empo2-seed3-training.csv"
    csv.write_text(HEADER
                   + "0,0.0,3,1.0,0.0,0.0,0.0,0.02,0.9,-5.0,2.0\n"   # off-policy into an empty memory: no tips
                   + "1,1.0,7,0.0,0.0,1.0,4.0,0.0,0.5,10.0,1.0\n"    # on-policy with 4 tips: nothing masked
                   + "2,2.0,11,1.0,0.0,0.0,6.0,0.30,0.2,20.0,3.0\n"  # off-policy with 6 tips, 30% masked
                   + "3,3.0,15,0.0,1.0,0.0,0.0,0.0,0.7,30.0,1.5\n")
    # drawn: 0, 1, 2; with tips: 1, 2 -> tips (4 + 6) / 2 = 5.0; masked over off-policy ones with tips: 30.0%;
    # valid with tips (0.5 + 0.2) / 2 = 35.0%, without (iterations 0 and 3) (0.9 + 0.7) / 2 = 80.0%
    assert memory_path.cell_row("empo2-seed3", memory_path.read_iterations(csv)) == (
        "| empo2-seed3 | 3 of 4 (0, 1, 2) | 2 | 5.0 | 30.0% | 35.0% / 80.0% |")
    assert memory_path.main(["--cells", str(csv)]) == 0
    assert capsys.readouterr().out.splitlines() == [*memory_path.CELL_HEADER, "| empo2-seed3 | 3 of 4 (0, 1, 2) | 2 | 5.0 | 30.0% | 35.0% / 80.0% |"]
    only_gpo = tmp_path / "grpo-seed0-training.csv"
    only_gpo.write_text(HEADER + "0,0.0,3,0.0,1.0,0.0,0.0,0.0,0.6,-5.0,0.0\n")
    assert memory_path.cell_row("grpo-seed0", memory_path.read_iterations(only_gpo)) == (
        "| grpo-seed0 | 0 of 1 (none) | 0 | – | – | – / 60.0% |")


def test_memory_path_names_a_missing_file(tmp_path, capsys):
    assert memory_path.main([str(tmp_path / "nope.csv")]) == 2
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'nope.csv'}: no such file")


@pytest.mark.parametrize("mode_columns", ["0.0,0.0,0.0", ",,"])
def test_a_row_without_a_drawn_mode_is_not_an_iteration(tmp_path, mode_columns):
    csv = tmp_path / "m.csv"
    csv.write_text(HEADER + f"0,0.0,3,{mode_columns},0.0,0.0,0.9,-5.0,2.0\n")
    assert memory_path.read_iterations(csv) == []
