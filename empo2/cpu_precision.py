"""Whether bf16 compute pays on this CPU, said before a run starts.

The CPU configs compute in bf16 (`trainer.precision: bf16-mixed`) with activation checkpointing:
on a CPU with native bf16 instructions (AVX-512 BF16, or AMX tiles) that halves the update's
time per token and, with the recomputed activations, cuts its memory to a fraction of float32's
(BENCHMARKS.md). Without them PyTorch emulates bf16 in float32 registers and the same run is slower
than float32, silently. So the run says so in one line, naming the key to change; it is a caveat,
not an error: the numbers are still right.
"""

from __future__ import annotations

from typing import Any


def native_bf16_cpu() -> bool:
    """True where this CPU has bf16 instructions PyTorch's CPU kernels use (AVX-512 BF16 or AMX)."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def cpu_bf16_caveat(trainer: dict[str, Any], native: bool | None = None) -> str | None:
    """One line when `trainer` asks for bf16 compute on a CPU that would emulate it; else None.
    `native` is this CPU's answer (`native_bf16_cpu()` when not given)."""
    precision = str(trainer.get("precision", "32-true"))
    if trainer.get("accelerator") != "cpu" or not precision.startswith("bf16"):
        return None
    if native is None:
        native = native_bf16_cpu()
    if native:
        return None
    return (f"trainer.precision={precision}: this CPU has no native bf16 (AVX-512 BF16 or AMX), so bf16 is "
            f"emulated and slower than float32 here; pass trainer.precision=32-true "
            f"(and model.gradient_checkpointing=false if memory allows) for speed")
