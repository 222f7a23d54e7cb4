"""Bad input gets one line naming the file or key and what to do, before any model loads."""

from pathlib import Path

import pytest
import torch

from empo2.checkpoint import read_checkpoint
from empo2.config import ConfigError, load_config


@pytest.mark.parametrize("text, message", [
    ("rollout: [1, 2]\n", "rollout: expected a section of `name: value` lines in {path}, got [1, 2]"),
    ("optim: 3\n", "optim: expected a section of `name: value` lines in {path}, got 3"),
    ("- a\n- b\n", "config file {path}: expected `key: value` lines at the top, got a list"),
])
def test_a_section_of_the_wrong_shape_is_named(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == message.format(path=path)


def test_yaml_syntax_errors_name_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: {name_or_path: [\n")
    with pytest.raises(ConfigError, match=rf"^config file {path}: not valid YAML \("):
        load_config(path)


def unreadable(path: Path) -> str:
    return (f"ckpt_path: {path} is not a readable checkpoint (not a torch zip archive: truncated, or not written "
            f"by empo2); point ckpt_path at another checkpoint (e.g. an iter_XXXXX.ckpt beside it)")


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty"])
def test_unreadable_checkpoints_are_named(tmp_path, kind):
    path = tmp_path / f"{kind}.ckpt"
    if kind == "garbage":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "truncated":
        torch.save({"state_dict": {"w": torch.ones(1000)}}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(b"")
    with pytest.raises(ValueError) as err:
        read_checkpoint(path)
    assert str(err.value) == unreadable(path)
    with pytest.raises(ValueError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_fit_and_evaluate_refuse_a_bad_checkpoint_before_anything_loads(tmp_path, capsys):
    """No model loads (its folder does not even exist) and no run directory is created."""
    from empo2.evaluate import main as evaluate_main
    from empo2.fit import main as fit_main

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    args = [f"out_dir={tmp_path / 'runs'}", "name=r", f"ckpt_path={bad}", f"model.name_or_path={tmp_path / 'no-model'}"]
    assert fit_main(args) == 2
    assert capsys.readouterr().err.strip() == f"config error: {unreadable(bad)}"
    assert not (tmp_path / "runs").exists()
    assert evaluate_main(args) != 0
    assert unreadable(bad) in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    ("{num_rooms: -1}", "env.options.num_rooms: must be 1..9, got -1"),
    ("{num_rooms: abc}", "env.options.num_rooms: an integer, got 'abc'"),
    ("{max_turns: 0}", "env.options.max_turns: must be >= 1, got 0"),
    ("{target_in_start_room: maybe}", "env.options.target_in_start_room: true or false, got 'maybe'"),
])
def test_bad_keyroom_option_values_are_config_errors(options, message):
    """A bad value inside env.options is refused when the config loads, before any model does."""
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"env.options={options}"])
    assert str(err.value) == message


def test_a_hub_id_missing_from_the_local_cache_is_one_line_before_the_run_dir(tmp_path, capsys, monkeypatch):
    from empo2.fit import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main([f"out_dir={tmp_path}", "name=r", "model.name_or_path=someorg/not-a-cached-model"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: model.name_or_path: 'someorg/not-a-cached-model' is neither a folder nor in the local "
                          "Hugging Face cache")
    assert not (tmp_path / "r").exists()  # nothing left behind


@pytest.mark.slow
def test_resuming_without_the_memory_folder_is_one_line(warm_model, tmp_path):
    """A run's memory/ deleted after a checkpoint: the resume is refused, naming the folder, before
    the model loads (and the checkpoint is untouched)."""
    import shutil

    from conftest import tiny_overrides
    from empo2.fit import fit

    over = tiny_overrides(warm_model, tmp_path, name="m", **{"trainer.max_epochs": 1, "mode.p": 1.0})
    fit(load_config(None, over))
    run = tmp_path / "m"
    shutil.rmtree(run / "memory")
    last = (run / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(ConfigError, match=rf"^ckpt_path: .*restores the memory at version \d+, but {run / 'memory'} is missing"):
        fit(load_config(None, [*over, "trainer.max_epochs=2", "ckpt_path=last"]))
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == last


def test_yaml_errors_say_where_and_why(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  lora: {r: 4\nrollout:\n  x: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"config file {path}: not valid YAML (line 3, column 8: did not find expected ',' or '}}')"


def test_an_empty_config_file_is_an_error(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (f"config file {path}: empty; write the settings to change as `section: ...` lines "
                              f"(conf/quickstart.yaml is an example), or leave --config out for the defaults")


@pytest.mark.parametrize("override, message", [
    ("rollout=fast", "rollout: a section, not a value; set one of its keys, e.g. rollout.tasks_per_iteration=... "
                     "(python -m empo2.fit --print-config lists them)"),
    ("model.lora.rank=4", "model.lora.rank: Key 'rank' not in 'LoraConfig' (did you mean model.lora.r?)"),
    ("optim.lr_=1", "optim.lr_: Key 'lr_' not in 'OptimConfig' (did you mean optim.lr?)"),
    ("model.name_or_path=embedded:nope", "model.name_or_path: unknown embedded model 'embedded:nope'; known: "
                                         "embedded:smollm2-135m-instruct (or give a Hugging Face folder)"),
    ("env.train_instances=[findd/1]", "env.train_instances: 'findd/1' is no KeyRoom instance; they are "
                                      "find/<variation> (train: find/0 .. find/<num_train − 1>, test: the num_test after)"),
    ("env.test_instances=[find/x]", "env.test_instances: 'find/x' is no KeyRoom instance; they are "
                                    "find/<variation> (train: find/0 .. find/<num_train − 1>, test: the num_test after)"),
    ("name=" + "a" * 300, "name: 300 bytes long; a folder name takes at most 255, shorten it"),
    ("name=a/b", "name: 'a/b' must be one folder name (no '/'); the run directory is <out_dir>/<name>"),
])
def test_bad_overrides_are_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value) == message


def test_unknown_sciworld_instances_are_refused_at_config_time():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["env.name=sciworld", "env.train_instances=[find-living-thing/1]"])
    assert str(err.value) == ("env.train_instances: 'find-living-thing/1' is no instance of env.options.tasks "
                              "['find-non-living-thing']; ScienceWorld instances are <task>/<variation>, "
                              "e.g. find-non-living-thing/0")


def test_out_dir_that_is_a_file_is_named(tmp_path):
    taken = tmp_path / "notes.txt"
    taken.write_text("x")
    for out_dir in (taken, taken / "deeper"):
        with pytest.raises(ConfigError) as err:
            load_config(None, [f"out_dir={out_dir}"])
        assert str(err.value) == f"out_dir: {taken} is a file, not a folder; point out_dir at a folder (or a new path)"


def test_memory_init_from_must_be_a_memory_folder(tmp_path):
    from empo2.memory import MemoryStore, memory_dir

    run = tmp_path / "run"
    MemoryStore(memory_dir(run))  # a real (empty) tip table on disk
    load_config(None, [f"memory.init_from={memory_dir(run)}"])  # the memory folder itself is accepted
    cases = {
        run: f"memory.init_from: {run} is a run folder; point it at its memory folder, {memory_dir(run)}",
        tmp_path / "missing": f"memory.init_from: {tmp_path / 'missing'} does not exist; point it at another run's memory/ folder",
        tmp_path: f"memory.init_from: {tmp_path} holds no tip table (memory.lance); point it at another run's memory/ folder",
    }
    for folder, message in cases.items():
        with pytest.raises(ConfigError) as err:
            load_config(None, [f"memory.init_from={folder}"])
        assert str(err.value) == message


@pytest.mark.parametrize("saved, overrides, message", [
    ("lora4", ["model.lora.r=8"], "holds LoRA adapters of rank 4 but model.lora.r is 8; pass model.lora.r=4"),
    ("lora4", ["model.lora.enabled=false"], "holds LoRA adapters (rank 4) but model.lora.enabled is false; "
                                            "pass model.lora.enabled=true model.lora.r=4"),
    ("full", [], "holds full weights, no LoRA adapters; pass model.lora.enabled=false"),
])
def test_a_checkpoint_that_cannot_fit_the_lora_settings_is_refused_before_the_model_loads(tmp_path, capsys, saved,
                                                                                          overrides, message):
    """The model folder does not exist: any model load would fail on that instead."""
    from empo2.evaluate import main as evaluate_main

    prefix = "policy.base_model.model.model.layers.0.self_attn.q_proj"
    weights = {f"{prefix}.lora_A.default.weight": torch.zeros(4, 64), f"{prefix}.lora_B.default.weight": torch.zeros(64, 4)} \
        if saved == "lora4" else {"policy.model.layers.0.self_attn.q_proj.weight": torch.zeros(64, 64)}
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": weights, "epoch": 0}, ckpt)
    args = [f"out_dir={tmp_path / 'runs'}", "name=r", f"ckpt_path={ckpt}", f"model.name_or_path={tmp_path / 'no-model'}",
            *overrides]
    assert evaluate_main(args) != 0
    assert capsys.readouterr().err.strip().endswith(f"ckpt_path: {ckpt} {message}")


from empo2.envs import KeyRoomEnv  # noqa: E402 - the user environment below builds on it


class PickyEnv(KeyRoomEnv):
    """A user environment with no `check_options` of its own: it judges its option only when built."""

    check_options = classmethod(lambda cls, **options: None)

    def __init__(self, colour: str = "red") -> None:
        if colour not in ("red", "blue"):
            raise ValueError(f"colour must be red or blue, got {colour!r}")
        super().__init__()


def test_an_environment_rejecting_its_options_fails_before_the_run_directory(tmp_path, capsys):
    from empo2.fit import main as fit_main

    args = [f"out_dir={tmp_path / 'runs'}", "name=r", "env.cls=test_bad_input:PickyEnv", "env.options={colour: green}",
            f"model.name_or_path={tmp_path / 'no-model'}"]
    # the model folder does not exist: this line comes before any model or run directory
    assert fit_main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "config error: env.options: PickyEnv rejected the options {'colour': 'green'}: colour must be red or blue, got 'green'")
    assert not (tmp_path / "runs").exists()
