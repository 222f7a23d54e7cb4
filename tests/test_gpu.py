"""The GPU suite (`make test-gpu`): the paths that only run where CUDA is present.

FSDP1 (`trainer.strategy=fsdp`), bf16 compute under sharding, vLLM's GPU engine (bf16 weights,
sleep mode, weight loading on the device) and the paper's ScienceWorld config are written for GPUs
and cannot run on the CPU machines the rest of the suite runs on. Every test here is marked `gpu`
and skipped without CUDA, each with the reason it needs; a test that needs a package or program
the GPU machine lacks (vLLM, lancedb, a JVM) says which, so a partial GPU image still runs the rest.

On one GPU the sharded runs use one rank: FSDP1 still wraps every decoder layer, gathers and
reshards parameters, and reduces gradients through its flat parameters, which is where its code
differs from the whole-model path; with two or more GPUs the update test uses two ranks.
"""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import torch

from empo2.checkpoint import is_sharded_checkpoint
from empo2.config import load_config
from empo2.models import build_policy, build_tiny, load_tokenizer

from conftest import fit_processes, tiny_overrides
from test_fit import read_metrics, stable
from test_sharding import assert_same_update, sharded_update

CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (run `make test-gpu` on one)")]


def needs(module: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"needs the Python package `{module}`, not installed here")


needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs a Java runtime (ScienceWorld's JVM)")

PLAIN_GRPO = {"mode.p": 0, "memory.enabled": False, "intrinsic.kind": "none"}
"""Training without memory or novelty bonus: the GPU fit tests then need no lancedb and no embedder."""


@pytest.fixture(scope="module")
def untied_model(embedded_model, tmp_path_factory) -> str:
    return str(build_tiny(embedded_model, tmp_path_factory.mktemp("untied"), tied=False))


@pytest.mark.parametrize("tied", [True, False], ids=["full-tied", "full-untied"])
def test_fsdp1_update_equals_one_process(tiny_model, untied_model, tmp_path, tied):
    """FSDP1 over min(GPUs, 2) ranks takes the same SGD steps as the whole model on one GPU (full
    fine-tuning: LoRA under FSDP1 is refused, `fsdp1_refusal` says why)."""
    lora = False
    model = tiny_model if tied else untied_model
    cfg = load_config(None, [f"model.name_or_path={model}", f"model.lora.enabled={lora}", "model.lora.r=4"])
    base = {k: v.detach().clone() for k, v in build_policy(cfg.model, cfg.seed).named_parameters()}
    devices = min(torch.cuda.device_count(), 2)
    sharded = sharded_update(tmp_path, "fsdp", devices, model, lora)
    single = sharded_update(tmp_path, "auto", 1, model, lora, accelerator="gpu")
    assert_same_update(sharded, single, base)


def fsdp_overrides(warm_model, tmp_path, name, **extra):
    return tiny_overrides(warm_model, tmp_path, name=name, **{
        "trainer.strategy": "fsdp", "trainer.accelerator": "gpu", "trainer.devices": 1,
        "sharding.mixed_precision": "bf16", "model.lora.enabled": False, "optim.lr": 1e-4, **PLAIN_GRPO, **extra})


@pytest.fixture(scope="module")
def fsdp_straight(warm_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    fit_processes(fsdp_overrides(warm_model, out, "straight"))
    return out / "straight"


def test_fsdp_bf16_fit(fsdp_straight):
    """Full fine-tuning under FSDP1 with bf16 compute: two iterations, a folder of shards, gradients
    that flow and the phases' GPU peaks logged."""
    rows = read_metrics(fsdp_straight)
    assert len(rows) == 2 and float(rows[0]["train/grad_norm"]) > 0  # the warm policy's returns vary in a group
    cuda = [k for k in rows[0] if k.endswith("_peak_cuda_mb")]
    assert cuda and all(float(r[k]) > 0 for r in rows for k in cuda if r[k])
    assert is_sharded_checkpoint(fsdp_straight / "checkpoints" / "last.ckpt")


@pytest.mark.xfail(strict=True, reason="measured 2026-11-26 on one H200: the resumed run's iteration 1 rollouts "
                   "differ from the straight run's (return -87.5 against -100); cause not yet found")
def test_fsdp_bf16_exact_resume(warm_model, fsdp_straight, tmp_path):
    """A run stopped after iteration 1 and resumed logs exactly what the straight run logs."""
    fit_processes(fsdp_overrides(warm_model, tmp_path, "resumed", **{"trainer.max_epochs": 1}))
    fit_processes(fsdp_overrides(warm_model, tmp_path, "resumed", ckpt_path="last"))
    assert stable(read_metrics(tmp_path / "resumed")) == stable(read_metrics(fsdp_straight))


def probe_change(engine, tokenizer, lr: float) -> None:
    """One SGD step on the policy that makes the engine's probe response less likely."""
    from empo2.token_batch import pack, response_logprobs

    policy = engine.policy
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    policy.train()
    device = next(policy.parameters()).device
    batch = pack([engine.probe_prompt] * 2, [engine.probe_response] * 2, tokenizer.pad_token_id).to(device)
    response_logprobs(policy, batch).sum().backward()
    opt.step()
    opt.zero_grad()


@needs("vllm")
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_vllm_gpu_engine_bf16_sync_and_sleep(tiny_model, tmp_path, lora):
    """vLLM on the GPU with bf16 weights: after every sync the probe shows the engine serves the
    trainer's weights (LoRA adapter or full reload), and a sleep between phases loses nothing."""
    from peft import LoraConfig, get_peft_model

    from empo2.engines import SamplingParams, VLLMEngine
    from empo2.engines.vllm import StaleEngineError, VLLMSettings
    from empo2.models import load_causal_lm

    tokenizer = load_tokenizer(tiny_model)
    torch.manual_seed(0)
    policy = load_causal_lm(tiny_model).cuda()
    if lora:
        policy = get_peft_model(policy, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                   task_type="CAUSAL_LM"))
    settings = VLLMSettings(model_path=tiny_model, dtype="bfloat16", max_model_len=512, max_num_seqs=8,
                            lora_rank=4 if lora else None, gpu_memory_utilization=0.2, sleep_between_phases=True,
                            verify_tolerance=0.05)  # bf16 engine against an fp32 trainer: ~1e-2 per token
    engine = VLLMEngine(policy, tokenizer, settings, tmp_path / "engine")
    try:
        engine.sync_weights()
        before, _ = engine.probe_logprobs()
        for _ in range(2):  # train → sleep → wake on the next sync, twice
            engine.release_memory()
            assert engine.asleep
            probe_change(engine, tokenizer, lr=2.0 if lora else 0.5)
            if not lora:
                with pytest.raises(StaleEngineError):
                    engine._wake()
                    engine.verify()  # not synced yet: the probe sees the old weights
            engine.sync_weights()
            assert not engine.asleep and engine.probe_gap <= settings.verify_tolerance
        after, _ = engine.probe_logprobs()
        assert max(abs(a - b) for a, b in zip(after, before)) > 0.1  # the new weights, not the old ones
        gens = engine.generate([engine.probe_prompt] * 3, SamplingParams(max_new_tokens=6, temperature=1.0))
        assert len(gens) == 3 and all(0 < len(g.token_ids) <= 6 and len(g.logprobs) == len(g.token_ids) for g in gens)
    finally:
        engine.close()


@needs("vllm")
@needs("scienceworld")
@needs("lancedb")
@needs_java
def test_paper_sciworld_config_two_iterations(tiny_model, tmp_path):
    """conf/sciworld.yaml as the paper runs it (FSDP1, bf16 compute, vLLM beside the policy, memory,
    novelty), shrunk to a tiny model, one GPU and a few episodes, for two iterations."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    fit_processes([
        "--config", str(root / "conf" / "sciworld.yaml"), f"out_dir={tmp_path}", "name=paper",
        f"model.name_or_path={tiny_model}", "model.gradient_checkpointing=false", "trainer.devices=1",
        "trainer.max_epochs=2", "rollout.tasks_per_iteration=2", "rollout.group_size=2", "rollout.max_prompt_tokens=1024",
        "optim.mini_batch_size=8", "engine.gpu_memory_utilization=0.2", "engine.verify_tolerance=0.05",
        "eval.val_every=0", "logging.progress_bar=false", "memory.tip_max_tokens=16",
        "mode.p=1.0", "mode.q=0.5", "mode.granularity=group",
    ])
    rows = read_metrics(tmp_path / "paper")
    assert [float(r["engine/weight_version"]) for r in rows] == [1.0, 2.0]
    assert all(float(r["train/grad_norm"]) > 0 and float(r["rollout/generated_tokens"]) > 0 for r in rows)
    assert all(float(r["engine/sync_probe_gap"]) <= 0.05 for r in rows)
