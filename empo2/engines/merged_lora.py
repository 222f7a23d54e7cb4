"""A generation copy of a LoRA policy with the adapters folded into its weights.

Why: unmerged, every decode step pays for each adapted linear twice (the base matmul plus the
rank-r detour through A and B, with its own kernel launches and copies); on the embedded 135M model
on a CPU that is 10-20% of a step (BENCHMARKS.md). Folding W + s·B·A into a plain copy removes it.
The trainer keeps training its adapters on the unmerged policy, and nothing is ever unmerged: the
copy is rewritten from the policy (base weights and adapters) whenever the policy's weights have
moved since the last rewrite, which the parameters' version counters tell (`weights_version`), so a
generation never runs on stale weights however often the trainer steps between calls.

Only in float32. Under bf16 or fp16 compute a folded weight is rounded to 16 bits, and an update
much smaller than the weight (early LoRA training) would be mostly rounded away, while the trainer,
unmerged, scores it at full size: the engine would sample from another policy than the one trained.
`mergeable` says where folding is exact up to float32 round-off.

The delta of each layer is peft's own (`get_delta_weight`), so scaling and fan-in/fan-out layouts
follow the library; layer kinds this copy does not know (DoRA, LoRA biases, embedding adapters,
`modules_to_save`) make `mergeable` false and the engine generates with the policy itself.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch

from empo2.engines.prefix_cache import weights_version


def _lora_layers(policy: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The policy's adapted layers by their name inside the base model."""
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    return {name.removeprefix(prefix): m for name, m in policy.named_modules() if isinstance(m, LoraLayer)}


def mergeable(policy: torch.nn.Module, compute: torch.dtype | None) -> bool:
    """True when `policy` is a peft LoRA model whose adapters can be folded into a float32 copy:
    float32 weights, no autocast, plain linear adapters only, nothing trained outside them."""
    from peft import PeftModel
    from peft.tuners.lora import Linear

    if not isinstance(policy, PeftModel) or compute is not None:
        return False
    if any(p.dtype != torch.float32 for p in policy.parameters()):
        return False
    if any(getattr(c, "modules_to_save", None) for c in policy.peft_config.values()):
        return False
    layers = _lora_layers(policy)
    if not layers:
        return False
    for m in layers.values():
        if type(m) is not Linear or m.merged:
            return False
        if any(m.use_dora.get(a) or m.lora_bias.get(a) for a in m.active_adapters):
            return False
    return True


class MergedLoRA:
    """Owns the folded copy of one policy; `current()` hands it out up to date."""

    def __init__(self, policy: torch.nn.Module) -> None:
        self.policy = policy
        """The trained (unmerged) LoRA policy the copy is rewritten from."""
        self.model: torch.nn.Module | None = None
        """The plain base model with folded weights; built at the first `current()`, on the policy's device."""
        self._version: int | None = None
        self._sources: list[tuple[torch.nn.Parameter, Callable[[], torch.Tensor]]] = []
        """Each parameter of the copy, with how to read its value from the policy."""

    def current(self) -> torch.nn.Module:
        """The folded copy, rewritten first if the policy's weights moved since the last call."""
        device = next(self.policy.parameters()).device
        if self.model is None or next(self.model.parameters()).device != device:
            self._build()
        version = weights_version(self.policy)
        if version != self._version:
            self._rewrite()
            self._version = version
        return self.model

    def _build(self) -> None:
        self.model = copy.deepcopy(self.policy).merge_and_unload()
        self.model.requires_grad_(False)
        layers = _lora_layers(self.policy)
        base = self.policy.get_base_model()
        self._sources = []
        for name, param in self.model.named_parameters():  # tied weights appear once
            owner, _, leaf = name.rpartition(".")
            if owner in layers:
                layer = layers[owner]
                if leaf == "weight":
                    self._sources.append((param, lambda layer=layer: self._folded(layer)))
                else:
                    self._sources.append((param, lambda layer=layer, leaf=leaf: getattr(layer.base_layer, leaf)))
            else:
                self._sources.append((param, lambda owner=owner, leaf=leaf: getattr(base.get_submodule(owner), leaf)))
        self._version = None

    @staticmethod
    def _folded(layer) -> torch.Tensor:
        weight = layer.base_layer.weight
        for adapter in layer.active_adapters:
            if adapter in layer.lora_A:
                weight = weight + layer.get_delta_weight(adapter)
        return weight

    @torch.no_grad()
    def _rewrite(self) -> None:
        for param, source in self._sources:
            param.copy_(source())

    def close(self) -> None:
        """Drop the copy (its memory); the next `current()` builds it again."""
        self.model = None
        self._sources = []
        self._version = None
