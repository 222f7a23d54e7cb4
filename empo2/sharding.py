"""Strategies by config, and what a sharded policy needs: wrapping, lock-step forwards, gathered weights.

Why this module: Lightning owns the processes (its own launcher, torchrun, SLURM) and the checkpoint
files; what it cannot know is how to cut *our* policy into FSDP units, that an RL trainer calls the
policy outside `training_step` (old log-probs, rollout engines), and that every forward of a
sharded model is a collective all ranks must join. The rules, in one place:

- `trainer.strategy` names `auto`, `ddp` (and Lightning's other strings) go to Lightning unchanged.
  `fsdp` becomes a Lightning `FSDPStrategy` (FSDP1; PyTorch runs it on GPUs only) and `fsdp2` a
  `ModelParallelStrategy` over all processes (FSDP2 `fully_shard`; CPU and GPU). In both the
  policy is wrapped in `configure_model`: each decoder layer (the model's `_no_split_modules`) is
  a unit and the whole policy the root unit, with or without LoRA.
- Gradients are *summed* over ranks, because the loss already divides by the token count of all
  ranks (EMPO2.md §6.1 token-mean). FSDP averages its reduce-scatter over ranks, so the module
  scales its loss by the world size there (`grad_average_factor`); FSDP2's own switch to plain
  sums (`set_gradient_divide_factor(1)`) needs a reduction gloo lacks (PREMUL_SUM).
- Every rank runs the same number of forwards (`lockstep_count`): ranks with fewer micro-batches
  run empty ones. Rollout engines never run the sharded module; they read a gathered copy of the
  weights (`gathered_weights`) at each sync.

Imports inside functions are deliberate: the FSDP modules load only for the strategy that uses them.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

from empo2 import distributed as D
from empo2.config_error import ConfigError

SHARDED_STRATEGIES = ("fsdp", "fsdp2")
COMPUTE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def strategy_name(cfg: Any) -> str:
    strategy = cfg.trainer.get("strategy", "auto")
    return strategy if isinstance(strategy, str) else type(strategy).__name__


def uses_sharding(cfg: Any) -> bool:
    return strategy_name(cfg) in SHARDED_STRATEGIES


def sharded_checkpoint(cfg: Any) -> bool:
    """Whether checkpoints are folders of shards (else one whole file; see `sharding.*`)."""
    chosen = cfg.sharding.sharded_checkpoint
    return (not cfg.model.lora.enabled) if chosen is None else bool(chosen)


def build_strategy(cfg: Any) -> Any:
    """The object or string for `lightning.Trainer(strategy=...)`."""
    name = strategy_name(cfg)
    if name == "fsdp2":
        return FSDP2Strategy(save_distributed_checkpoint=sharded_checkpoint(cfg))
    if name == "fsdp":
        if not torch.cuda.is_available():  # checked here, not in the config: a login node may lack GPUs
            raise ConfigError("trainer.strategy: fsdp (FSDP1) runs on GPUs only and none is visible; use fsdp2")
        return FSDPStrategy(state_dict_type="sharded" if sharded_checkpoint(cfg) else "full")
    return cfg.trainer.get("strategy", "auto")


class FSDP2Strategy(ModelParallelStrategy):
    """ModelParallelStrategy with every process in one data-parallel (FSDP2) group: its own `auto`
    would make each node a tensor-parallel group, which a policy without a tensor plan cannot use."""

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        super().setup_environment()


def layer_units(policy: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers: the classes the model itself names as never to be split."""
    base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    names = set(getattr(base, "_no_split_modules", None) or [])
    units = [m for m in policy.modules() if type(m).__name__ in names]
    if not units:
        raise ValueError(
            f"cannot shard {type(base).__name__}: it names no decoder layer class (_no_split_modules)"
        )
    return units


def shard_policy(policy: torch.nn.Module, strategy: Any, cfg: Any) -> torch.nn.Module:
    """Wrap the policy for the trainer's strategy (called from `configure_model`); others unchanged."""
    compute = COMPUTE_DTYPES.get(cfg.sharding.mixed_precision)
    if isinstance(strategy, ModelParallelStrategy):
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = strategy.device_mesh["data_parallel"]
        mp = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32 if compute else None)
        for unit in layer_units(policy) + [policy]:
            fully_shard(unit, mesh=mesh, mp_policy=mp, reshard_after_forward=cfg.sharding.reshard_after_forward)
        return policy
    if isinstance(strategy, FSDPStrategy):
        refusal = fsdp1_refusal(policy, cfg.sharding.mixed_precision)
        if refusal:
            raise ConfigError(refusal)
        from torch.distributed.fsdp import FullyShardedDataParallel, MixedPrecision, ShardingStrategy
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        mp = MixedPrecision(param_dtype=compute, reduce_dtype=torch.float32, buffer_dtype=compute) if compute else None
        return FullyShardedDataParallel(
            policy,
            auto_wrap_policy=ModuleWrapPolicy({type(u) for u in layer_units(policy)}),
            sharding_strategy=ShardingStrategy.FULL_SHARD if cfg.sharding.reshard_after_forward
            else ShardingStrategy.SHARD_GRAD_OP,
            mixed_precision=mp,
            use_orig_params=True,  # LoRA: frozen and trainable weights share flat parameters
            device_id=strategy.root_device,
            limit_all_gathers=True,
        )
    return policy


def fsdp1_refusal(policy: torch.nn.Module, mixed_precision: str) -> str | None:
    """Why FSDP1 cannot train this policy, or None. LoRA (frozen and trainable weights sharing FSDP1's
    flat parameters through `use_orig_params`), measured on one H100 with PyTorch 2.11: in float32
    on a model with tied input/output embeddings it fails an internal assertion on the shared weight;
    on an untied model it trains, but not the update one process takes (the gradient norms of four
    SGD steps summed to 3.342 against 3.509; full fine-tuning matched to 1e-5). bf16 compute ran but
    was never compared with one process. FSDP2 shards each weight on its own, and its LoRA update
    equals one process's (tests/test_sharding.py), so LoRA goes there. `mixed_precision` is kept in
    the signature for the message and for shapes a later measurement clears."""
    lora = any(p.requires_grad for p in policy.parameters()) and not all(p.requires_grad for p in policy.parameters())
    if lora:
        return ("trainer.strategy=fsdp (FSDP1) with LoRA is refused: measured on a GPU, it fails on tied "
                "embeddings and takes a different update from one process on an untied model"
                f"{' (sharding.mixed_precision=' + mixed_precision + ' was not compared)' if mixed_precision != 'none' else ''}; "
                "use trainer.strategy=fsdp2, or full fine-tuning (model.lora.enabled=false)")
    return None


def is_fsdp1(policy: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel

    return isinstance(policy, FullyShardedDataParallel)


def is_sharded(policy: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return is_fsdp1(policy) or any(isinstance(p, DTensor) for p in policy.parameters())


def unwrapped(policy: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face / PEFT model inside an FSDP1 wrapper (FSDP2 keeps the object itself)."""
    return policy.module if is_fsdp1(policy) else policy


def grad_average_factor(policy: torch.nn.Module) -> float:
    """What the strategy divides summed gradients by: FSDP averages over ranks; ddp here sums."""
    return float(D.world_size()) if is_sharded(policy) else 1.0


def lockstep_count(n: int, policy: torch.nn.Module) -> int:
    """The number of forwards every rank must run: the most any rank needs when sharded."""
    return max(D.gather_objects(n)) if is_sharded(policy) else n


def clip_grad_norm(policy: torch.nn.Module, params: list[torch.nn.Parameter], max_norm: float) -> float:
    """Clip the gradient of all ranks' shards together; return the norm before clipping."""
    if is_fsdp1(policy):
        return float(policy.clip_grad_norm_(max_norm))
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def gathered_weights(policy: torch.nn.Module, trainable_only: bool) -> dict[str, torch.Tensor]:
    """Full (unsharded) weights on every rank, named as in the unwrapped model. A collective:
    every rank calls it at the same point."""
    from torch.distributed.tensor import DTensor

    if is_fsdp1(policy):
        # Not the full state dict: under LoRA in float32 its post-hook asserts that the root unit's
        # frozen weights (embeddings, final norm) are in a dict that lacks them (measured on one H100,
        # PyTorch 2.11). Unsharding the parameters themselves needs no state-dict machinery, and
        # `named_parameters` names a tied weight once, as the unsharded branch does.
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(policy, writeback=False):
            return {clean_parameter_name(n): p.detach().clone()
                    for n, p in policy.named_parameters() if p.requires_grad or not trainable_only}
    return {
        name: p.full_tensor() if isinstance(p, DTensor) else p.detach()
        for name, p in policy.named_parameters() if p.requires_grad or not trainable_only
    }


def clean_parameter_name(name: str) -> str:
    """A parameter's name as in a checkpoint's state dict (FSDP1 wrapper prefixes removed)."""
    return name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")
