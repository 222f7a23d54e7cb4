"""The CPU configs' bf16 + activation checkpointing: the caveat on CPUs that would emulate bf16,
and checkpointing changes the memory, not the gradient."""

import zlib

import pytest
import torch

from empo2.config import load_config
from empo2.cpu_precision import cpu_bf16_caveat, native_bf16_cpu
from empo2.models import build_policy
from empo2.token_batch import build_batch, response_logprobs

pytestmark = pytest.mark.isa  # run again under an AVX2 cap (make test-isa)


def test_caveat_only_for_bf16_on_a_cpu_without_it():
    cpu_bf16 = {"accelerator": "cpu", "precision": "bf16-mixed"}
    line = cpu_bf16_caveat(cpu_bf16, native=False)
    assert line.startswith("trainer.precision=bf16-mixed: this CPU has no native bf16") and "32-true" in line
    assert cpu_bf16_caveat(cpu_bf16, native=True) is None
    assert cpu_bf16_caveat({"accelerator": "cpu", "precision": "32-true"}, native=False) is None
    assert cpu_bf16_caveat({"accelerator": "cpu"}, native=False) is None
    assert cpu_bf16_caveat({"accelerator": "gpu", "precision": "bf16-mixed"}, native=False) is None
    assert isinstance(native_bf16_cpu(), bool)


def test_shipped_cpu_configs_compute_in_bf16_with_checkpointing():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for name in ("quickstart", "sciworld_cpu", "webshop_cpu"):
        cfg = load_config(root / "conf" / f"{name}.yaml", [])
        assert cfg.trainer["precision"] == "bf16-mixed" and cfg.model.gradient_checkpointing, name


def lora_grads(model_dir: str, recompute: bool) -> dict[str, torch.Tensor]:
    cfg = load_config(None, [f"model.name_or_path={model_dir}", f"model.gradient_checkpointing={recompute}"])
    torch.manual_seed(0)  # the LoRA A matrices are drawn at random: the same draw for both policies
    model = build_policy(cfg.model, 0).train()
    for name, p in model.named_parameters():  # B = 0 at start would leave A's gradient zero: make both live
        if p.requires_grad and "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(zlib.crc32(name.encode())))
    batch = build_batch("padded", [list(range(5, 45)), list(range(9, 30))], [[7, 8, 9], [11, 12]], 0)
    response_logprobs(model, batch).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_activation_checkpointing_keeps_the_gradient(tiny_model):
    # Recomputing a layer's forward in backward runs the same float32 kernels on the same inputs,
    # so the gradient is the one without it (to float32 round-off, 1e-5 relative).
    plain, recomputed = lora_grads(tiny_model, False), lora_grads(tiny_model, True)
    assert plain.keys() == recomputed.keys() and len(plain) > 0
    for name in plain:
        scale = plain[name].abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(recomputed[name], plain[name], rtol=1e-5, atol=1e-5 * scale, msg=name)
