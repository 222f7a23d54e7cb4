"""Pictures: each PNG opens, has the size of a real figure, and carries its axis labels."""

import csv
import json

from PIL import Image

from empo2.plots import adaptation_curve, dominant_mode, iteration_rows, learning_curves, score_bars


def write_metrics(path):
    rows = [
        {"epoch": 0, "iteration": 0, "rollout/return": -20, "mode/on_policy": 1, "mode/off_policy": 0,
         "time/rollout_s": 10, "time/update_s": 2, "val/return": ""},
        {"epoch": 1, "iteration": 1, "rollout/return": 5, "mode/on_policy": 0, "mode/off_policy": 1,
         "time/rollout_s": 11, "time/update_s": 2, "val/return": ""},
        {"epoch": 1, "iteration": "", "rollout/return": "", "mode/on_policy": "", "mode/off_policy": "",
         "time/rollout_s": "", "time/update_s": "", "val/return": 7},
    ]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def labels(png):
    image = Image.open(png)
    assert image.size[0] >= 400 and image.size[1] >= 300
    return json.loads(image.text["Axes"])


def test_learning_curves_merge_rows_and_mark_modes(tmp_path):
    write_metrics(tmp_path / "metrics.csv")
    with (tmp_path / "metrics.csv").open() as fh:
        merged = iteration_rows(list(csv.DictReader(fh)))
    assert len(merged) == 2 and merged[1]["val/return"] == "7" and merged[1]["rollout/return"] == "5"
    assert [dominant_mode(r) for r in merged] == ["on_policy", "off_policy"]
    got = labels(learning_curves(tmp_path / "metrics.csv", tmp_path / "lc.png"))
    assert got[0]["x"] == "iteration" and "return" in got[0]["y"]
    assert got[1]["x"].startswith("training time")


def test_adaptation_and_bar_plots(tmp_path):
    got = labels(adaptation_curve([0, 1, 2], [-10.0, 5.0, 20.0], tmp_path / "a.png", success=[0.0, 0.5, 1.0]))
    assert got[0]["x"].startswith("adaptation iteration") and got[0]["y"] == "mean episode return"
    assert got[1]["y"] == "success rate"
    got = labels(score_bars({"m1": {"t": 1.0}, "m2": {"t": 2.0}}, tmp_path / "b.png", title="x"))
    assert got[0] == {"title": "x", "x": "task", "y": "mean return"}
