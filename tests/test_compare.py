"""The comparison harness end to end on the small environment, and its summary arithmetic."""

import copy
import csv
import gzip
import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from empo2.compare import equal_budget_iterations, main, method_config, reflexion_config
from empo2.comparison_table import MEAN, _paired_lines, paired_differences, summarise
from empo2.config import load_config, to_yaml

from conftest import tiny_overrides


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_means_and_stds_by_hand():
    results = [
        {"method": "a", "task": "t1", "seed": 0, "return": 10.0, "success_rate": 0.1},
        {"method": "a", "task": "t1", "seed": 1, "return": 20.0, "success_rate": 0.2},
        {"method": "a", "task": "t2", "seed": 0, "return": -30.0, "success_rate": 0.0},
        {"method": "a", "task": "t2", "seed": 1, "return": 0.0, "success_rate": 0.0},
    ]
    means, stds = summarise(results)
    assert means["a"]["t1"] == 15.0 and means["a"]["t2"] == -15.0
    assert stds["a"]["t1"] == pytest.approx(7.0710678)  # sqrt(((10-15)^2 + (20-15)^2) / 1)
    # mean over tasks per seed: seed 0 -> -10, seed 1 -> 10; mean 0, std sqrt(200)
    assert means["a"][MEAN] == 0.0 and stds["a"][MEAN] == pytest.approx(14.1421356)


def test_paired_differences_by_hand():
    row = lambda method, task, seed, ret: {"method": method, "task": task, "seed": seed, "return": ret,  # noqa: E731
                                           "success_rate": 0.0}
    results = [row("grpo", "t1", 0, 10.0), row("grpo", "t2", 0, 30.0), row("grpo", "t1", 1, 5.0), row("grpo", "t2", 1, 5.0),
               row("empo2", "t1", 0, 14.0), row("empo2", "t2", 0, 20.0), row("empo2", "t1", 2, 1.0), row("empo2", "t2", 2, 1.0)]
    # per seed over tasks: grpo {0: 20, 1: 5}, empo2 {0: 17, 2: 1}; only seed 0 is shared
    assert paired_differences(results, "empo2", "grpo") == {"0": -3.0}
    results += [row("empo2", "t1", 1, 9.0), row("empo2", "t2", 1, 7.0)]  # seed 1: 8 - 5 = +3
    assert paired_differences(results, "empo2", "grpo") == {"0": -3.0, "1": 3.0}
    lines = _paired_lines(results)
    # differences -3, +3: mean 0, sample std sqrt((9 + 9) / 1) = 4.24
    assert "| empo2 | -3.0, +3.0 | +0.0 ± 4.2 |" in lines
    assert not any(line.startswith("| grpo |") for line in lines)  # the reference is not compared with itself
    assert _paired_lines([row("naive", "t1", 0, 1.0), row("grpo", "t1", 0, 2.0)]) == []  # nothing to pair


def test_reflexion_gets_the_training_cells_episode_budget():
    # KeyRoom protocol: 12 iterations × (4 tasks × 8) = 384 rollouts + 20 houses × 4 = 80 held-out
    # episodes = 464; a reflexion pass is 80 episodes: ⌊464 / 80⌋ = 5 passes (400 ≤ 464 < 480).
    assert equal_budget_iterations(12, 32, 80) == 5
    assert equal_budget_iterations(2, 8, 8) == 3  # 16 + 8 = 24 = exactly three passes
    assert equal_budget_iterations(1, 2, 100) == 1  # never fewer than one pass
    cfg = load_config("conf/protocol/keyroom-success.yaml", [])
    reflexion = reflexion_config(cfg)
    assert (reflexion.adapt.iterations, reflexion.rollout.tasks_per_iteration, reflexion.rollout.group_size) == (5, 20, 4)
    assert reflexion.adapt.split == "test"
    cfg.compare.reflexion_iterations = 2  # set: taken as given
    assert reflexion_config(cfg).adapt.iterations == 2


def test_method_configs(tiny_model, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_model, tmp_path, name="cmp"))
    grpo = method_config(cfg, "grpo", "find-here", 3)
    assert (grpo.mode.p, grpo.memory.enabled, grpo.intrinsic.kind, grpo.seed) == (0.0, False, "none", 3)
    assert grpo.env.options["target_in_start_room"] is True
    assert grpo.run_dir == tmp_path / "cmp" / "compare" / "find-here-seed3" / "grpo"
    assert grpo.algo.advantage == "grpo"
    for method in ("gigpo", "hgpo"):  # step-level credit baselines: GRPO's switches, their estimator
        step = method_config(cfg, method, None, 0)
        assert (step.mode.p, step.memory.enabled, step.intrinsic.kind, step.algo.advantage) == (0.0, False, "none", method)
    empo2 = method_config(cfg, "empo2", None, 0)
    assert empo2.mode.p == cfg.mode.p and empo2.memory.enabled and empo2.algo.advantage == cfg.algo.advantage
    with_gigpo = load_config(None, tiny_overrides(tiny_model, tmp_path, name="cmp", **{"algo.advantage": "gigpo"}))
    assert method_config(with_gigpo, "empo2", None, 0).algo.advantage == "gigpo"  # EMPO² with step-level credit


def test_the_warm_start_does_not_depend_on_which_seeds_are_left(tiny_model, tmp_path):
    """A continuation narrowed to the seeds still to run (`compare.seeds=[2]`) trains the same warm
    start as the full run: under the config's `seed`, in the same folder."""
    from empo2.compare import warm_start_config

    over = tiny_overrides(tiny_model, tmp_path, name="cmp")
    full = warm_start_config(load_config(None, [*over, "seed=5", "compare.seeds=[0,1,2]"]), None)
    rest = warm_start_config(load_config(None, [*over, "seed=5", "compare.seeds=[2]"]), None)
    assert full.seed == rest.seed == 5 and full.run_dir == rest.run_dir == tmp_path / "cmp" / "compare" / "task" / "warm_start"


def test_a_retrained_warm_start_is_checked_against_the_published_curve():
    from empo2.compare import warm_start_drift

    published = [3.325, 1.177, 0.478]
    assert warm_start_drift(published, [3.325, 1.177, 0.478]) is None
    assert warm_start_drift(published, [3.3252, 1.1775, 0.4783]) is None  # each within 1e-3 relative
    drift = warm_start_drift(published, [3.325, 1.177, 0.473])  # 0.005 apart: ~1e-2 relative
    assert drift is not None and "0.473" in drift and "0.478" in drift and "another policy" in drift
    assert warm_start_drift(published, [3.325, 1.177]) is not None  # another number of epochs
    nan = float("nan")
    assert "no held-out demonstrations" in warm_start_drift([nan, nan], [nan, nan])


VARIANT = "compare.variants={empo2-split: [intrinsic.combine=advantage, intrinsic.coef=0.1]}"


def test_variants_train_as_empo2_with_their_overrides(tiny_model, tmp_path):
    from empo2.config import ConfigError

    over = tiny_overrides(tiny_model, tmp_path, name="cmp")
    cfg = load_config(None, [*over, VARIANT, "compare.methods=[grpo,empo2,empo2-split]"])
    split = method_config(cfg, "empo2-split", None, 2)
    assert (split.intrinsic.combine, split.intrinsic.coef, split.seed, split.name) == ("advantage", 0.1, 2, "empo2-split")
    assert split.mode.p == cfg.mode.p and split.memory.enabled
    assert split.run_dir == tmp_path / "cmp" / "compare" / "task-seed2" / "empo2-split"
    plain = method_config(cfg, "empo2", None, 2)
    assert (plain.intrinsic.combine, plain.intrinsic.coef) == ("reward", 1.0)  # the variant touched only itself
    with pytest.raises(ConfigError, match=r"^compare.methods: \['empo2-sep'\]; choose from .*empo2-split"):
        load_config(None, [*over, VARIANT, "compare.methods=[empo2-sep]"])
    with pytest.raises(ConfigError, match=r"^compare.variants: \['grpo'\] would hide the built-in method"):
        load_config(None, [*over, "compare.variants={grpo: [optim.lr=0.1]}"])
    with pytest.raises(ConfigError, match=r"^compare.variants.x: \['intrinsic.coef'\]: each override is key=value"):
        load_config(None, [*over, "compare.variants={x: [intrinsic.coef]}"])
    bad = load_config(None, [*over, "compare.variants={x: [intrinsic.weight=0.1]}", "compare.methods=[x]"])
    with pytest.raises(ConfigError, match=r"^compare.variants.x: .*weight"):
        method_config(bad, "x", None, 0)  # compare() checks every variant this way before any cell runs
    wrong = load_config(None, [*over, "compare.variants={x: [intrinsic.combine=both]}", "compare.methods=[x]"])
    with pytest.raises(ConfigError, match=r"^compare.variants.x: intrinsic.combine"):
        method_config(wrong, "x", None, 0)


def test_a_continued_comparison_may_add_variants_not_change_them(tiny_model, tmp_path):
    from empo2.compare import check_same_experiment
    from empo2.config import ConfigError, to_yaml

    over = tiny_overrides(tiny_model, tmp_path, name="cmp")
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(load_config(None, over)))
    check_same_experiment(load_config(None, [*over, VARIANT]), saved)  # a new variant: allowed
    saved.write_text(to_yaml(load_config(None, [*over, VARIANT])))
    changed = "compare.variants={empo2-split: [intrinsic.combine=advantage, intrinsic.coef=0.2]}"
    with pytest.raises(ConfigError, match="compare.variants.empo2-split differ"):
        check_same_experiment(load_config(None, [*over, changed]), saved)
    with pytest.raises(ConfigError, match="compare.variants.empo2-split differ"):
        check_same_experiment(load_config(None, over), saved)  # removed


def test_a_narrowed_continuation_keeps_the_whole_grid_on_record(tiny_model, tmp_path):
    from empo2.compare import whole_grid

    over = tiny_overrides(tiny_model, tmp_path, name="cmp")
    saved = tmp_path / "config.yaml"
    assert whole_grid(load_config(None, [*over, "compare.seeds=[2]"]), saved).compare.seeds == [2]  # nothing saved yet
    saved.write_text(to_yaml(load_config(None, [*over, "compare.seeds=[0,1,2]", "compare.methods=[naive,grpo,reflexion]"])))
    narrowed = load_config(None, [*over, "compare.seeds=[2]", "compare.methods=[reflexion]"])
    kept = whole_grid(narrowed, saved)
    assert (kept.compare.seeds, kept.compare.methods) == ([0, 1, 2], ["naive", "grpo", "reflexion"])
    assert (narrowed.compare.seeds, narrowed.compare.methods) == ([2], ["reflexion"])  # the run itself stays narrowed
    grown = whole_grid(load_config(None, [*over, "compare.seeds=[3]", "compare.methods=[grpo,empo2]"]), saved)
    assert (grown.compare.seeds, grown.compare.methods) == ([0, 1, 2, 3], ["naive", "grpo", "reflexion", "empo2"])


@pytest.mark.slow
def test_compare_end_to_end(warm_model, tmp_path):
    over = tiny_overrides(warm_model, tmp_path, name="cmp", **{
        "trainer.max_epochs": 1, "eval.episodes_per_instance": 1, "compare.tasks": "[find,find-here]",
        "compare.reflexion_iterations": 1})
    assert main(over) == 0
    out = tmp_path / "cmp" / "compare"
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["method"], r["task"]) for r in rows] == [
        (m, t) for t in ("find", "find-here") for m in ("naive", "reflexion", "grpo", "empo2")]
    assert all(-100 <= float(r["return"]) <= 100 and 0 <= float(r["success_rate"]) <= 1 for r in rows)
    summary = (out / "summary.md").read_text()
    for method in ("naive", "reflexion", "grpo", "empo2"):
        assert f"| {method} |" in summary
    assert MEAN in summary
    png = Image.open(out / "comparison.png")
    labels = json.loads(png.text["Axes"])
    assert labels[0]["x"] == "task" and labels[0]["y"] == "mean return (test split)"
    # Each trained method left its own run with curves and episodes; GRPO wrote no memory.
    for method in ("grpo", "empo2"):
        run = out / "find-seed0" / method
        assert (run / "logs" / "learning_curves.png").is_file() and (run / "trajectories" / "index.html").is_file()
        assert (run / "eval").is_dir()
    assert not (out / "find-seed0" / "grpo" / "memory").exists()
    # Curves: one per trained cell (its training iterations) and reflexion's adaptation iterations.
    with (out / "curves.csv").open() as fh:
        curves = list(csv.DictReader(fh))
    assert {(c["method"], c["iteration"]) for c in curves if c["task"] == "find"} == {
        ("grpo", "0"), ("empo2", "0"), ("reflexion", "0")}
    assert json.loads(Image.open(out / "curves-find.png").text["Axes"])[0]["x"] == "iteration"
    assert (out / "find-seed0" / "reflexion" / "adapt" / "same-task-seed0" / "adaptation.csv").is_file()

    # What bench/publish_comparison.py copies out for committing: per cell, the episodes it was
    # scored on (byte for byte, gzipped), training metrics per iteration, reflexion's adaptation table.
    publish = _bench_module("publish_comparison").publish
    pub = tmp_path / "published"
    publish(tmp_path / "cmp", pub)
    assert (pub / "results.csv").read_text() == (out / "results.csv").read_text()
    for task in ("find", "find-here"):
        for method in ("naive", "reflexion", "grpo", "empo2"):
            scored = pub / "episodes" / f"{task}-{method}-seed0-eval.jsonl.gz"
            source = (out / f"{task}-seed0" / method / "eval" / ("test-base.jsonl" if method == "naive" else "test-last.jsonl")
                      if method != "reflexion" else
                      out / f"{task}-seed0" / "reflexion" / "adapt" / "same-task-seed0" / "trajectories" / "iter_00000.jsonl")
            assert gzip.decompress(scored.read_bytes()) == source.read_bytes()
        for method in ("grpo", "empo2"):
            with (pub / f"{task}-{method}-seed0-training.csv").open() as fh:
                assert [float(r["iteration"]) for r in csv.DictReader(fh)] == [0.0]  # trainer.max_epochs 1
        assert (pub / f"{task}-reflexion-seed0-adaptation.csv").read_text() == (
            out / f"{task}-seed0" / "reflexion" / "adapt" / "same-task-seed0" / "adaptation.csv").read_text()
        assert not (pub / f"{task}-naive-seed0-training.csv").exists()


@pytest.mark.slow
def test_compare_continues_where_it_stopped(warm_model, tmp_path, capsys):
    """Finished cells (and the warm start) are kept when the same comparison runs again with more
    seeds; another config is refused before anything runs."""
    over = tiny_overrides(warm_model, tmp_path, name="cmp", **{
        "eval.episodes_per_instance": 1, "eval.max_instances": 2, "compare.methods": "[naive,warm_start]",
        "compare.warm_start": True, "sft.tasks": "[find-here]", "sft.epochs": 1, "sft.max_instances": 4,
        "sft.val_fraction": 0.5})
    assert main([*over, "compare.seeds=[0]"]) == 0
    out = tmp_path / "cmp" / "compare"
    record = out / "task" / "warm_start" / "policy" / "warm_start.json"
    first_eval = next((out / "task-seed0" / "naive" / "eval").glob("*.csv"))
    stamps = (record.stat().st_mtime_ns, first_eval.stat().st_mtime_ns)
    with (out / "results.csv").open() as fh:
        before = list(csv.DictReader(fh))
    # Published and restored on a "fresh machine" (another folder): the finished cells are skipped
    # and nothing runs, not even the warm start (it is trained only when a cell needs it).
    bench = _bench_module("publish_comparison")
    bench.publish(tmp_path / "cmp", tmp_path / "published")
    assert (tmp_path / "published" / "warm_start" / "task.json").read_text() == record.read_text()
    elsewhere = tmp_path / "elsewhere"
    assert bench.main(["--restore", str(tmp_path / "published"), str(elsewhere / "cmp")]) == 0
    moved = [*over, f"out_dir={elsewhere}"]
    assert main([*moved, "compare.seeds=[0]"]) == 0
    restored = elsewhere / "cmp" / "compare"
    assert (restored / "results.csv").read_text() == (out / "results.csv").read_text()
    assert sorted(p.name for p in restored.iterdir()) == ["comparison.png", "config.yaml", "results.csv", "results.lock", "summary.md", "task"]
    assert [p.name for p in (restored / "task").iterdir()] == ["warm_start.published.json"]
    assert bench.main(["--restore", str(tmp_path / "published"), str(elsewhere / "cmp")]) == 2  # would overwrite
    # A new seed there needs the warm start: retrained, and checked against the published record.
    capsys.readouterr()
    assert main([*moved, "compare.seeds=[0,1]"]) == 0
    assert "warm start: reproduces the published record's held-out NLL" in capsys.readouterr().out

    assert main([*over, "compare.seeds=[0,1]"]) == 0
    with (out / "results.csv").open() as fh:
        after = list(csv.DictReader(fh))
    assert after[:2] == before and [(r["method"], r["seed"]) for r in after[2:]] == [("naive", "1"), ("warm_start", "1")]
    assert (record.stat().st_mtime_ns, first_eval.stat().st_mtime_ns) == stamps
    # Every method but naive started from the warm start.
    assert load_config(out / "task-seed1" / "warm_start" / "config.yaml").model.init_from == str(record.parent)
    assert load_config(out / "task-seed1" / "naive" / "config.yaml").model.init_from is None
    assert main([*over, "compare.seeds=[0,1]", "optim.lr=0.5"]) == 2
    with (out / "results.csv").open() as fh:
        assert list(csv.DictReader(fh)) == after


def test_a_stopped_training_cell_continues_from_its_checkpoint(warm_model, tmp_path):
    """A grpo cell whose first iteration finished (checkpoint written) before the harness stopped is
    continued, not started over: iteration 0's logged row and saved episodes are the ones from before."""
    from empo2.compare import method_config
    from empo2.fit import fit

    over = tiny_overrides(warm_model, tmp_path, name="cmp", **{
        "eval.episodes_per_instance": 1, "eval.max_instances": 2, "compare.methods": "[grpo]", "compare.seeds": "[0]",
        "compare.warm_start": False, "checkpoint.every_n_iterations": 1})
    cell = method_config(load_config(None, over), "grpo", None, 0)
    cell.trainer["max_epochs"] = 1  # the harness "stopped" after one of two iterations
    cell.run_dir.mkdir(parents=True)
    fit(cell)
    first = sorted((cell.run_dir / "trajectories").glob("iter_*.jsonl"))
    stamps = [f.stat().st_mtime_ns for f in first]
    with (cell.run_dir / "logs" / "metrics.csv").open() as fh:
        row0 = list(csv.DictReader(fh))
    assert len(row0) == 1

    assert main(over) == 0
    with (cell.run_dir / "logs" / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and {k: rows[0].get(k) for k in row0[0]} == row0[0]
    assert [f.stat().st_mtime_ns for f in first] == stamps
    with (tmp_path / "cmp" / "compare" / "results.csv").open() as fh:
        assert [(r["method"], r["seed"]) for r in csv.DictReader(fh)] == [("grpo", "0")]


def test_a_stopped_reflexion_cell_continues_from_its_checkpoint(warm_model, tmp_path):
    """A reflexion cell whose adaptation loop finished iteration 0 before the harness stopped is
    continued: iteration 0's episodes are the ones from before, and the cell's curve has both."""
    from empo2.adapt import adapt, adaptation_checkpoint, adaptation_config
    from empo2.compare import can_continue

    over = tiny_overrides(warm_model, tmp_path, name="cmp", **{
        "eval.episodes_per_instance": 1, "eval.max_instances": 2, "compare.methods": "[reflexion]",
        "compare.seeds": "[0]", "compare.warm_start": False, "compare.reflexion_iterations": 2})
    cell = method_config(load_config(None, over), "reflexion", None, 0)
    assert not can_continue(cell, "reflexion")
    stopped = copy.deepcopy(cell)
    stopped.compare.reflexion_iterations = 1  # the harness "stopped" after one of two iterations
    stopped.run_dir.mkdir(parents=True)
    _, run, _ = adapt(reflexion_config(stopped), resume=True)
    assert adaptation_checkpoint(adaptation_config(reflexion_config(cell))) == run / "checkpoints" / "last.ckpt"
    assert can_continue(cell, "reflexion")
    first = run / "trajectories" / "iter_00000.jsonl"
    stamp = first.stat().st_mtime_ns

    assert main(over) == 0
    assert first.stat().st_mtime_ns == stamp and (run / "trajectories" / "iter_00001.jsonl").is_file()
    out = tmp_path / "cmp" / "compare"
    with (out / "results.csv").open() as fh:
        assert [(r["method"], r["seed"]) for r in csv.DictReader(fh)] == [("reflexion", "0")]
    with (out / "curves.csv").open() as fh:
        assert [c["iteration"] for c in csv.DictReader(fh)] == ["0", "1"]


def test_a_cell_another_process_holds_is_skipped_and_run_later(warm_model, tmp_path, capsys):
    """Two `empo2.compare` processes on one folder split the grid: a cell whose lock another holds
    is skipped (not run twice), the table keeps every process's rows, and the next run of the
    command, once the holder is gone, runs the skipped cell."""
    from empo2.cell_claims import cell_lock, claim
    from empo2.compare import cell_dir

    over = tiny_overrides(warm_model, tmp_path, name="cmp", **{
        "eval.episodes_per_instance": 1, "eval.max_instances": 2, "compare.methods": "[naive]",
        "compare.seeds": "[0,1]", "compare.warm_start": False})
    cfg = load_config(None, over)
    out = tmp_path / "cmp" / "compare"
    with claim(cell_lock(cell_dir(cfg, None, 0) / "naive")) as mine:  # "another process" runs seed 0
        assert mine
        assert main(over) == 0
    assert "naive  keyroom  seed 0: running in another process; skipped" in capsys.readouterr().out
    assert not (out / "task-seed0" / "naive").exists()
    with (out / "results.csv").open() as fh:
        assert [(r["method"], r["seed"]) for r in csv.DictReader(fh)] == [("naive", "1")]
    assert main(over) == 0
    with (out / "results.csv").open() as fh:
        assert [(r["method"], r["seed"]) for r in csv.DictReader(fh)] == [("naive", "1"), ("naive", "0")]
