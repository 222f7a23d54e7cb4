"""`python -m empo2.export`: a trained run (LoRA or full weights) as a Hugging Face folder whose
logits are the trainer's, evaluated like the checkpoint, recorded, and never written over."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from empo2.config import load_config
from empo2.export import RECORD, export, main as export_main
from empo2.fit import fit
from empo2.module import EMPO2Module

from conftest import tiny_overrides


def trained_run(model_dir: str, out: Path, name: str, lora: bool) -> list[str]:
    """A one-iteration fit with lr high enough that the weights (or adapters) really move."""
    over = tiny_overrides(model_dir, out, name=name, **{"trainer.max_epochs": 1, "model.lora.enabled": lora,
                                                       "model.lora.r": 4, "optim.lr": 5e-3})
    fit(load_config(None, over))
    return over


@pytest.fixture(scope="module")
def runs(warm_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return out, {"lora": trained_run(warm_model, out, "lora", True), "full": trained_run(warm_model, out, "full", False)}


def logits_of(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.arange(10, 60).reshape(2, 25)
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def runs_dir(over: list[str]) -> Path:
    return load_config(None, over).run_dir


def trainer_logits(over: list[str]) -> torch.Tensor:
    """The policy as the trainer holds it after loading the run's last checkpoint (what `evaluate` plays)."""
    module = EMPO2Module.from_checkpoint(load_config(None, over), str(runs_dir(over) / "checkpoints" / "last.ckpt"))
    return logits_of(module.policy.eval())


@pytest.mark.slow
@pytest.mark.parametrize("kind, merge", [("lora", True), ("lora", False), ("full", True)],
                         ids=["lora-merged", "lora-adapters", "full"])
def test_exported_folder_gives_the_trainers_logits(runs, kind, merge):
    out_root, overs = runs
    over = overs[kind]
    folder = out_root / f"exported-{kind}-{merge}"
    assert export(load_config(None, [*over, "ckpt_path=last", f"export.out={folder}", f"export.merge={merge}"])) == folder
    if merge:
        loaded = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
        assert not (folder / "adapter_config.json").exists() and (folder / "config.json").is_file()
    else:
        from peft import AutoPeftModelForCausalLM

        loaded = AutoPeftModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
        assert json.loads((folder / "adapter_config.json").read_text())["r"] == 4
    expected = trainer_logits(over)
    base = logits_of(AutoModelForCausalLM.from_pretrained(load_config(None, over).model.name_or_path).eval())
    assert (expected - base).abs().max() > 1e-3  # the run trained something the export must carry
    # fp32: merging W + B·A·s changes the rounding of one matmul, far below 1e-5 at these scales
    torch.testing.assert_close(logits_of(loaded.eval()), expected, rtol=0, atol=1e-5)
    record = json.loads((folder / RECORD).read_text())
    run_dir = runs_dir(over)
    assert record["iterations_trained"] == 1 and record["run"] == kind
    assert record["config_sha256"] == hashlib.sha256((run_dir / "config.yaml").read_bytes()).hexdigest()
    assert record["merged"] is merge and (record["lora"] is not None) == (kind == "lora")


@pytest.mark.slow
def test_evaluating_the_export_plays_the_checkpoints_episodes(runs):
    """Same seed, same episodes: the exported folder as `model.name_or_path` plays exactly what the
    checkpoint plays (fp32: the two policies' log-probs differ by < 1e-5, so a sampled token could
    only differ where a uniform draw fell within that of a boundary)."""
    from empo2.evaluate import evaluate

    out_root, overs = runs
    over = [*overs["lora"], "eval.max_instances=2", "eval.episodes_per_instance=2"]
    folder = out_root / "exported-for-eval"
    export(load_config(None, [*over, "ckpt_path=last", f"export.out={folder}"]))
    evaluate(load_config(None, [*over, "ckpt_path=last"]))
    evaluate(load_config(None, [*over, "name=from-export", f"model.name_or_path={folder}"]))
    played = (runs_dir(over) / "eval" / "test-last.jsonl").read_text().splitlines()
    again = (out_root / "from-export" / "eval" / "test-base.jsonl").read_text().splitlines()

    def actions(lines):
        return [([s["action"] for s in json.loads(l)["steps"]], json.loads(l)["return"]) for l in lines]

    assert len(played) == 4 and actions(played) == actions(again)  # 2 instances × 2 episodes


def test_export_refuses_what_it_cannot_do_in_one_line(tmp_path, capsys):
    """Before any model loads (the model folder does not exist): no checkpoint, no out, an existing out."""
    base = [f"out_dir={tmp_path}", "name=r", f"model.name_or_path={tmp_path / 'no-model'}"]
    assert export_main(base) == 2
    assert capsys.readouterr().err.strip() == ("config error: ckpt_path: export needs a trained policy; pass "
                                               "ckpt_path=last (the run's last checkpoint) or a path")
    ckpt = tmp_path / "r" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "RolloutDataModule": {"next_iteration": 1, "sampler": {}}}, ckpt)
    assert export_main([*base, "ckpt_path=last"]) == 2
    assert capsys.readouterr().err.strip() == "config error: export.out: the folder to write; pass out=DIR"
    taken = tmp_path / "taken"
    taken.mkdir()
    assert export_main([*base, "ckpt_path=last", f"out={taken}"]) == 2
    assert capsys.readouterr().err.strip() == (f"config error: export.out: {taken} exists; choose a new folder "
                                               f"(an export never overwrites)")
    assert export_main([*base, "ckpt_path=last", f"out={tmp_path / 'new'}", "merge=false", "model.lora.enabled=false"]) == 2
    assert "export.merge: false writes LoRA adapters alone" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
