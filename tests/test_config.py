"""Config schema: errors name the dotted key; docs/CONFIG.md matches the schema."""

from pathlib import Path

import pytest

from empo2.config import Config, ConfigError, load_config, to_yaml
from empo2.config_reference import field_docs, reference_markdown
from empo2.fit import main

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(None, ["rollout.group_size=8", "trainer.max_epochs=5", "optim.betas=[0.8,0.9]"])
    assert isinstance(cfg, Config)
    assert cfg.rollout.group_size == 8 and cfg.trainer["max_epochs"] == 5 and cfg.optim.betas == [0.8, 0.9]


@pytest.mark.parametrize("override, key", [
    ("rollout.group_sise=3", "rollout.group_sise"),          # unknown key
    ("rollout.group_size=many", "rollout.group_size"),       # wrong type
    ("model.lora.r=abc", "model.lora.r"),                    # nested wrong type
    ("rollout.group_size=0", "rollout.group_size"),          # range
    ("algo.clip_low=1.5", "algo.clip_low"),
    ("engine.kind=tgi", "engine.kind"),                      # choice
    ("algo.advantage=ppo_gae", "algo.advantage"),            # registry
    ("algo.loss=kl_only", "algo.loss"),
    ("trainer.max_epoch=3", "trainer.max_epoch"),            # not a Trainer argument
    ("trainer.use_distributed_sampler=true", "trainer.use_distributed_sampler"),  # owned by empo2
    ("trainer.max_epochs=-1", "trainer.max_epochs"),
    ("env.cls=mymodule.MyEnv", "env.cls"),
    ("logging.loggers=[csv,mlflow]", "logging.loggers"),
    ("env.max_turns=0", "env.max_turns"),
    ("optim.max_tokens_per_micro_batch=4000", "optim.max_tokens_per_micro_batch"),  # < one row (4500 + 32)
    ("optim.token_layout=ragged", "optim.token_layout"),
    ("engine.max_model_len=4600", "engine.max_model_len"),   # no room for a tip after a 4500 + 128 tip prompt
    ("checkpoint.keep=0", "checkpoint.keep"),                # Lightning would write no last.ckpt
    ("sft.val_fraction=1.0", "sft.val_fraction"),
    ("sft.split=dev", "sft.split"),
    ("compare.methods=[warm_start]", "compare.methods"),     # needs compare.warm_start=true
])
def test_errors_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value).startswith(key), str(err.value)


def test_missing_logger_package_is_named(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("tensorboard") else real(name, *a))
    with pytest.raises(ConfigError, match=r"^logging.loggers: tensorboard needs the package 'tensorboard'"):
        load_config(None, ["logging.loggers=[csv,tensorboard]"])


def test_yaml_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  lora:\n    rank: 4\n")
    with pytest.raises(ConfigError, match=r"^model\.lora\.rank"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["rollout.group_size"])


def test_cli_reports_config_errors_without_traceback(capsys):
    assert main(["rollout.tasks_per_iteration=x"]) == 2
    assert "config error: rollout.tasks_per_iteration" in capsys.readouterr().err


def test_print_config_round_trips(capsys):
    assert main(["--config", str(ROOT / "conf/quickstart.yaml"), "--print-config", "seed=7"]) == 0
    out = capsys.readouterr().out
    assert "seed: 7" in out
    path = ROOT / "tests" / "_printed.yaml"
    try:
        path.write_text(out)
        assert to_yaml(load_config(path)) == out
    finally:
        path.unlink()


def test_every_field_is_documented():
    missing = [key for key, _, doc in field_docs() if not doc]
    assert missing == []


def test_config_page_matches_schema():
    from empo2.config_reference import PAGE, reference_page

    assert PAGE == ROOT / "docs" / "CONFIG.md"
    assert PAGE.read_text() == reference_page(), "stale: regenerate with python -m empo2.config_reference --write"
    assert reference_markdown() in PAGE.read_text()


LAYERS = {"adapt": "sciworld.yaml", "strategy": "quickstart.yaml"}
"""Folders of overlays, and a run config of the kind their usage lines layer them on."""


@pytest.mark.parametrize("path", sorted((ROOT / "conf").rglob("*.yaml")), ids=lambda p: str(p.relative_to(ROOT / "conf")))
def test_shipped_configs_validate(path, tmp_path, monkeypatch):
    # conf/webshop.yaml reads the official files from $EMPO2_WEBSHOP_DATA: a copy of the synthetic
    # catalog under the official names stands in for them.
    import shutil

    from empo2.envs.webshop.catalog import DATA_ENV_VAR, SYNTHETIC_DIR

    for name in ("items_shuffle", "items_ins_v2"):
        shutil.copy(SYNTHETIC_DIR / f"{name}_synthetic.json", tmp_path / f"{name}_1000.json")
    shutil.copy(SYNTHETIC_DIR / "items_human_ins_synthetic.json", tmp_path / "items_human_ins.json")
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    base = LAYERS.get(path.parent.name)
    load_config([ROOT / "conf" / base, path] if base else path)
    if path.name == "webshop.yaml":
        monkeypatch.delenv(DATA_ENV_VAR)
        with pytest.raises(ConfigError, match=DATA_ENV_VAR):
            load_config(path)


def test_token_budget_error_says_what_to_do():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["rollout.max_prompt_tokens=1000", "rollout.max_new_tokens=24", "optim.max_tokens_per_micro_batch=512"])
    assert str(err.value) == (
        "optim.max_tokens_per_micro_batch: 512 cannot hold one row of rollout.max_prompt_tokens + "
        "rollout.max_new_tokens = 1024 tokens; raise it to >= 1024 (or lower rollout.max_prompt_tokens), or leave it unset")
    cfg = load_config(None, ["rollout.max_prompt_tokens=1000", "rollout.max_new_tokens=24"])
    assert cfg.micro_batch_tokens == 1024  # unset: one longest row


def test_the_vllm_context_must_hold_the_longest_prompt_sent():
    """Tips written by the policy: the tip prompt (4500 + 128) is the longest; without them, the rollout's."""
    with pytest.raises(ConfigError, match=r"^engine.max_model_len: 4628 .* tip prompt .*=4628; raise it"):
        load_config(None, ["engine.max_model_len=4628"])
    with pytest.raises(ConfigError, match=r"^engine.max_model_len: 4500 .* after rollout.max_prompt_tokens=4500; raise it"):
        load_config(None, ["engine.max_model_len=4500", "memory.tip_source=trace"])
    assert load_config(None, ["engine.max_model_len=4501", "memory.tip_source=trace"]).engine.max_model_len == 4501
