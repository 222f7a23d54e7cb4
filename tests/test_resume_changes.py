"""Config changes on resume: refused before anything is overwritten, or applied for real."""

import pytest
import yaml

from empo2.config import ConfigError, load_config, to_dict
from empo2.fit import fit
from empo2.resume_changes import changed_keys, check_resume_changes

from conftest import tiny_overrides


def test_changes_classified_by_hand():
    saved = {"seed": 0, "model": {"lora": {"r": 16, "alpha": 32}}, "optim": {"lr": 5e-5},
             "env": {"options": {"num_rooms": 3}}, "trainer": {"max_epochs": 2}, "ckpt_path": None}
    same = {**saved, "ckpt_path": "last"}
    assert changed_keys(saved, same) == {}  # how to start is not a change
    grown = {**same, "trainer": {"max_epochs": 5}, "optim": {"lr": 1e-3}}
    assert check_resume_changes(saved, grown, "c.yaml") == ["optim.lr: 5e-05 -> 0.001", "trainer.max_epochs: 2 -> 5"]
    for key, value in [("model", {"lora": {"r": 8, "alpha": 32}}), ("model", {"lora": {"r": 16, "alpha": 64}}),
                       ("env", {"options": {"num_rooms": 4}}), ("seed", 1)]:
        with pytest.raises(ConfigError, match=r"resuming cannot change (model\.lora\.r|model\.lora\.alpha|env\.options|seed) "):
            check_resume_changes(saved, {**same, key: value}, "c.yaml")


@pytest.mark.slow
def test_refused_change_leaves_the_run_untouched_and_lr_change_applies(warm_model, tmp_path, capsys):
    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="run", **{"trainer.max_epochs": 1})))
    run = tmp_path / "run"
    before = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"resuming cannot change model\.lora\.r .*name="):
        fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="run", ckpt_path="last",
                                             **{"trainer.max_epochs": 2, "model.lora.r": 4})))
    assert (run / "config.yaml").read_text() == before and not list(run.glob("config.*.yaml"))
    capsys.readouterr()
    cfg = load_config(None, tiny_overrides(warm_model, tmp_path, name="run", ckpt_path="last",
                                           **{"trainer.max_epochs": 2, "optim.lr": 0.00123}))
    trainer = fit(cfg)
    assert "resume: applying changed optim.lr" in capsys.readouterr().err
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.00123  # not the restored optimizer's old lr
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 0.00123  # says what ran
    assert yaml.safe_load((run / "config.1.yaml").read_text())["optim"]["lr"] == to_dict(
        load_config(None, tiny_overrides(warm_model, tmp_path)))["optim"]["lr"]


def test_a_resume_under_fsdp1_says_it_is_not_exact():
    from empo2.resume_changes import resume_caveat

    assert resume_caveat("fsdp").startswith("resume: under trainer.strategy=fsdp (FSDP1)")
    assert "fsdp2 resumes exactly" in resume_caveat("fsdp")
    for exact in ("ddp", "fsdp2", "auto", None):  # measured exact (2 CPU processes), or one process
        assert resume_caveat(exact) is None
