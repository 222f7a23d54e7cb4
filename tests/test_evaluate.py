"""Evaluation: the per-task table by hand, the command on a trained checkpoint, the validation callback."""

import csv

import pytest
import torch

from conftest import tiny_overrides
from empo2.config import load_config
from empo2.evaluate import TaskScore, main, score_table, write_table
from empo2.fit import fit

RECORDS = [
    {"task": "b", "return": 0.0, "score": 5.0, "success": False},
    {"task": "a", "return": 10.0, "score": 10.0, "success": False},
    {"task": "a", "return": -100.0, "score": -100.0, "success": False},
    {"task": "b", "return": 50.0, "score": 55.0, "success": False},
    {"task": "a", "return": 100.0, "score": 100.0, "success": True},
]


def test_score_table_by_hand(tmp_path):
    rows = score_table(RECORDS)
    assert [r.task for r in rows] == ["a", "b", "mean over tasks"]
    a, b, mean = rows
    assert (a.episodes, a.mean_return, a.mean_score, a.success_rate) == (3, pytest.approx(10 / 3), pytest.approx(10 / 3), pytest.approx(1 / 3))
    assert (b.episodes, b.mean_return, b.mean_score, b.success_rate) == (2, 25.0, 30.0, 0.0)
    # the mean row averages tasks, not episodes: (10/3 + 25) / 2, (1/3 + 0) / 2
    assert mean.episodes == 5 and mean.mean_return == pytest.approx(85 / 6) and mean.success_rate == pytest.approx(1 / 6)
    csv_path, md_path = write_table(rows, tmp_path, "t")
    with csv_path.open() as fh:
        back = [TaskScore(r["task"], int(r["episodes"]), float(r["mean_return"]), float(r["mean_score"]),
                          float(r["success_rate"])) for r in csv.DictReader(fh)]
    assert back == rows
    assert "| b | 2 | 25.0 | 30.0 | 0.000 |" in md_path.read_text()


@pytest.mark.slow
def test_validation_callback_and_evaluate_command(tiny_model, tmp_path, capsys):
    over = {"trainer.max_epochs": 2, "eval.val_every": 2, "eval.episodes_per_instance": 2, "mode.p": 0.0}
    trainer = fit(load_config(None, tiny_overrides(tiny_model, tmp_path, name="ev", **over)))
    run = tmp_path / "ev"
    with (run / "logs" / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["val/episodes"] for r in rows] == ["", "8.0"]  # 4 test instances × 2, at iteration 1 only
    assert -100 <= float(rows[1]["val/return"]) <= 100 and 0 <= float(rows[1]["val/success_rate"]) <= 1
    table = (run / "eval" / "val-iter_00001.md").read_text()
    assert "| mean over tasks | 8 |" in table

    # The command on the checkpoint: same protocol, table written next to the run's other files.
    args = tiny_overrides(tiny_model, tmp_path, name="ev", **over) + ["ckpt_path=last"]
    assert main(args) == 0
    assert "| mean over tasks | 8 |" in capsys.readouterr().out
    assert (run / "eval" / "test-last.csv").is_file() and (run / "eval" / "test-last.jsonl").is_file()

    # The policy it evaluated holds the trained adapter weights, not the fresh ones.
    from empo2.module import EMPO2Module

    cfg = load_config(None, args)
    loaded = EMPO2Module.from_checkpoint(cfg, str(run / "checkpoints" / "last.ckpt"))
    trained = trainer.lightning_module.state_dict()
    lora = [k for k in trained if "lora_B" in k]
    assert lora and all(torch.equal(loaded.state_dict()[k], trained[k]) for k in lora)
    assert any(trained[k].abs().sum() > 0 for k in lora)  # B starts at zero: training moved it

    # Base model (no checkpoint) and a checkpoint that does not fit the config.
    assert main(tiny_overrides(tiny_model, tmp_path, name="ev", **over) + ["eval.max_instances=1"]) == 0
    assert (run / "eval" / "test-base.md").read_text().count("\n") == 4  # header, rule, 1 task, mean
    assert main(args + ["model.lora.r=4"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "holds LoRA adapters of rank 16 but model.lora.r is 4; pass model.lora.r=16")
