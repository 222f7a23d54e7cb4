"""Sharded strategies: presets and config errors, FSDP2 updates equal to one process, FSDP2 runs with
exact resume and once-written memory, adapters checkpointed whole. FSDP1 is in the GPU suite
(test_gpu.py).

The FSDP2 runs use two CPU processes (gloo) through Lightning's ModelParallelStrategy; FSDP1
(`trainer.strategy=fsdp`) runs on GPUs only.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from empo2.checkpoint import is_sharded_checkpoint, read_checkpoint
from empo2.config import ConfigError, load_config
from empo2.models import build_policy
from empo2.module import EMPO2Module
from empo2.sharding import FSDP2Strategy, build_strategy

from conftest import assert_memory_written_once, child_env, fit_processes, tiny_overrides
from test_ddp import MEMORY_EVERY_ITERATION, rank_episodes
from test_fit import read_metrics, stable

ROOT = Path(__file__).resolve().parents[1]


def test_strategy_presets():
    for name in ("ddp", "fsdp", "fsdp2"):  # each preset layers onto a run config
        cfg = load_config([ROOT / "conf" / "quickstart.yaml", ROOT / "conf" / "strategy" / f"{name}.yaml"])
        assert cfg.trainer["strategy"] == name and cfg.trainer["max_epochs"] == 2
    lora = load_config(None, ["trainer.strategy=fsdp2"])
    full = load_config(None, ["trainer.strategy=fsdp2", "model.lora.enabled=false"])
    forced = load_config(None, ["trainer.strategy=fsdp2", "sharding.sharded_checkpoint=true"])
    assert isinstance(build_strategy(lora), FSDP2Strategy)
    # LoRA adapters are small: one whole file; full fine-tuning: a folder of shards (unless set).
    assert build_strategy(lora)._save_distributed_checkpoint is False
    assert build_strategy(full)._save_distributed_checkpoint is True
    assert build_strategy(forced)._save_distributed_checkpoint is True
    assert build_strategy(load_config(None, ["trainer.strategy=ddp"])) == "ddp"
    assert build_strategy(load_config(None, [])) == "auto"


def test_strategy_config_errors():
    with pytest.raises(ConfigError, match="fsdp2"):
        load_config(None, ["trainer.strategy=fsdp", "trainer.accelerator=cpu"])
    if not torch.cuda.is_available():  # a GPU config loads anywhere; the trainer refuses it here
        with pytest.raises(ConfigError, match="fsdp2"):
            build_strategy(load_config(None, ["trainer.strategy=fsdp", "trainer.accelerator=gpu"]))
    with pytest.raises(ConfigError, match="sharding.mixed_precision"):
        load_config(None, ["trainer.strategy=fsdp2", "trainer.precision=bf16-mixed"])
    with pytest.raises(ConfigError, match="sharding.mixed_precision"):
        load_config(None, ["sharding.mixed_precision=fp8"])


def sharded_update(tmp_path, strategy: str, devices: int, model: str, lora: bool, micro: tuple[int, int] = (2, 1000),
                   accelerator: str = "") -> dict:
    out = tmp_path / f"{strategy}-{devices}-{lora}-{micro[0]}-{micro[1]}{accelerator}.pt"
    env = child_env()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "sharded_update.py"), str(out), strategy, str(devices), model, str(lora),
         *map(str, micro), accelerator],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out)


UPDATE_RTOL = 1e-4
"""Two runs of the same SGD steps whose gradients are summed in another order (micro-batches split
over ranks, sharded reductions) differ per element by lr × the rounding of those sums: fp32 keeps
~7 digits and a gradient element here sums at most a few thousand terms, so the difference is
~1e-6 of the largest update element (measured 2e-6 for LoRA and full weights). 1e-4 leaves a wide margin; every
real fault (a row lost or counted twice, a token count from one rank only, a missing reduction)
changes the update by at least one row's share, 1/8 of it."""


def assert_same_update(a: dict, b: dict, base: dict) -> None:
    """Equal updates up to float summation order (SGD: the update is lr × the summed gradient)."""
    assert abs(a["grad_norm_sum"] - b["grad_norm_sum"]) <= 1e-5 * b["grad_norm_sum"]
    wa, wb = a["weights"], b["weights"]
    assert set(wa) == set(wb)
    moved = max(float((wb[k] - base[k]).abs().max()) for k in wb)
    gap = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert moved > 1e-3  # the update was real (weights are ~1e-2, far above fp32 resolution)
    assert gap <= UPDATE_RTOL * moved, f"updates differ by {gap:.3g}, {gap / moved:.3g} of the largest update"


@pytest.mark.slow
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_fsdp2_update_equals_one_process(tiny_model, tmp_path, lora):
    cfg = load_config(None, [f"model.name_or_path={tiny_model}", f"model.lora.enabled={lora}", "model.lora.r=4"])
    base = {k: v.detach().clone() for k, v in build_policy(cfg.model, cfg.seed).named_parameters()}
    sharded = sharded_update(tmp_path, "fsdp2", 2, tiny_model, lora)
    single = sharded_update(tmp_path, "auto", 1, tiny_model, lora)
    assert_same_update(sharded, single, base)


@pytest.mark.slow
def test_token_budget_micro_batches_equal_one_batch(tiny_model, tmp_path):
    """Two FSDP2 ranks cutting each step's rows by a 40-token budget (1-2 rows a micro-batch, and a
    different count per rank, so the lock-step forwards run) update the weights as one process
    that takes every step's rows in a single micro-batch."""
    cfg = load_config(None, [f"model.name_or_path={tiny_model}", "model.lora.r=4"])
    base = {k: v.detach().clone() for k, v in build_policy(cfg.model, cfg.seed).named_parameters()}
    budgeted = sharded_update(tmp_path, "fsdp2", 2, tiny_model, True, micro=(8, 40))
    whole = sharded_update(tmp_path, "auto", 1, tiny_model, True, micro=(8, 1000))
    assert_same_update(budgeted, whole, base)


@pytest.mark.slow
def test_fsdp2_fit_sharded_checkpoint_and_exact_resume(warm_model, tmp_path):
    """Full fine-tuning under FSDP2: checkpoints are folders of shards, resume is exact, memory is
    written once, and `from_checkpoint` (evaluate, adapt) reads the folder as whole weights."""
    def over(name, **extra):
        return tiny_overrides(warm_model, tmp_path, name=name, **{
            "trainer.strategy": "fsdp2", "trainer.devices": 2, "trainer.max_epochs": 2,
            "model.lora.enabled": False, "optim.lr": 1e-4, **MEMORY_EVERY_ITERATION, **extra})

    fit_processes(over("fsdp2"))
    run = tmp_path / "fsdp2"
    rows = read_metrics(run)
    assert len(rows) == 2 and all(float(r["train/grad_norm"]) > 0 for r in rows)
    assert_memory_written_once(run, rank_episodes(run, 2))
    last = run / "checkpoints" / "last.ckpt"
    assert is_sharded_checkpoint(last) and last.is_symlink()  # the newest folder of shards, not a copy
    assert last.resolve() == (run / "checkpoints" / "iter_00001.ckpt").resolve()

    fit_processes(over("resumed", **{"trainer.max_epochs": 1}))
    fit_processes(over("resumed", ckpt_path="last"))
    assert stable(read_metrics(tmp_path / "resumed")) == stable(rows)

    cfg = load_config(None, over("fsdp2"))
    trained = dict(EMPO2Module.from_checkpoint(cfg, str(last)).policy.named_parameters())
    base = dict(build_policy(cfg.model, cfg.seed).named_parameters())
    assert set(trained) == set(base)
    assert max(float((trained[k] - base[k]).detach().abs().max()) for k in base) > 0

    # `python -m empo2.export` reads the run's last.ckpt, a folder of shards, into a whole model folder
    from transformers import AutoModelForCausalLM

    from empo2.export import export

    folder = export(load_config(None, over("fsdp2", ckpt_path="last", **{"export.out": tmp_path / "exported"})))
    exported = dict(AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).named_parameters())
    assert set(exported) == set(trained) and all(torch.equal(exported[k], trained[k]) for k in exported)


@pytest.mark.slow
def test_fsdp2_lora_adapters_saved_whole(warm_model, tmp_path):
    """Each rank holds half of every adapter matrix; the checkpoint holds all of each, and only them."""
    fit_processes(tiny_overrides(warm_model, tmp_path, name="lora", **{
        "trainer.strategy": "fsdp2", "trainer.devices": 2, "trainer.max_epochs": 1}))
    last = tmp_path / "lora" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    saved = read_checkpoint(last)["state_dict"]
    cfg = load_config(None, tiny_overrides(warm_model, tmp_path, name="lora"))
    adapters = {f"policy.{k}": p for k, p in build_policy(cfg.model, cfg.seed).named_parameters() if p.requires_grad}
    assert set(saved) == set(adapters)
    assert all(saved[k].shape == adapters[k].shape for k in adapters)
    assert any(not torch.equal(saved[k], adapters[k]) for k in adapters)  # trained, not the initial adapters
    loaded = dict(EMPO2Module.from_checkpoint(cfg, str(last)).named_parameters())
    assert all(torch.equal(loaded[k], saved[k]) for k in adapters)


def test_fsdp1_refuses_lora(tiny_model, tmp_path):
    """FSDP1 + LoRA, measured on a GPU to fail (tied embeddings) or to take another update than one
    process (untied), is refused with the way out in the message; full fine-tuning is let through."""
    from empo2.models import build_tiny
    from empo2.sharding import fsdp1_refusal

    untied = build_tiny(tiny_model, tmp_path / "untied", tied=False)

    def policy(model, lora):
        cfg = load_config(None, [f"model.name_or_path={model}", f"model.lora.enabled={lora}", "model.lora.r=4"])
        return build_policy(cfg.model, cfg.seed)

    for lora_policy in (policy(tiny_model, True), policy(untied, True)):  # tied and untied: both measured wrong
        for precision in ("none", "bf16"):
            assert "use trainer.strategy=fsdp2" in fsdp1_refusal(lora_policy, precision)
    assert fsdp1_refusal(policy(tiny_model, False), "none") is None
    assert fsdp1_refusal(policy(untied, False), "bf16") is None
    assert fsdp1_refusal(policy(tiny_model, False).requires_grad_(False), "none") is None  # a frozen reference
