"""Rollout engines: the contract, the registry, and a factory that honours `engine.kind`."""

from __future__ import annotations

import importlib.util

from empo2.engines.base import ENGINES, Generation, RolloutEngine, SamplingParams
from empo2.engines.hf import HFEngine


def resolve_kind(kind: str) -> str:
    """`auto` picks vllm when the package is importable, else hf."""
    if kind == "auto":
        return "vllm" if importlib.util.find_spec("vllm") is not None and "vllm" in ENGINES.names() else "hf"
    return kind


__all__ = ["ENGINES", "Generation", "HFEngine", "RolloutEngine", "SamplingParams", "resolve_kind"]
