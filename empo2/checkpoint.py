"""Reading a Lightning checkpoint outside the trainer, whole file or folder of shards alike.

Why: `fit` must know the iteration a checkpoint resumes at before the trainer exists, and
`evaluate`/`adapt` load weights into a single process. Sharded strategies (fsdp, fsdp2 with
`sharding.sharded_checkpoint`) write a folder: every rank's shards in `torch.distributed.checkpoint`
format plus `meta.pt` with everything else (loop, datamodule and callback states). Here both kinds
read as the same dict.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from empo2.config_error import ConfigError

if TYPE_CHECKING:
    from empo2.config import Config

META_FILE = "meta.pt"
DATAMODULE_STATE = "RolloutDataModule"
"""Where Lightning keeps the rollout datamodule's state in a checkpoint (the class's qualified name;
a subclass's state, e.g. the adaptation loop's `AdaptationData`, sits under its own name)."""


def datamodule_state(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """The rollout datamodule's state in a loaded checkpoint: under `DATAMODULE_STATE`, or under a
    subclass's name (found by the state's own layout, `RolloutDataModule.state_dict`)."""
    if DATAMODULE_STATE in ckpt:
        return ckpt[DATAMODULE_STATE]
    return next((v for v in ckpt.values() if isinstance(v, dict) and "next_iteration" in v and "sampler" in v), None)


def is_sharded_checkpoint(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / META_FILE).is_file()


def exists(path: str | Path) -> bool:
    return Path(path).is_file() or is_sharded_checkpoint(path)


def read_checkpoint(path: str | Path, weights: bool = True) -> dict[str, Any]:
    """The checkpoint as one dict; `weights=False` skips the model and optimizer state of a sharded
    one (a whole file is memory-mapped, so its weights cost nothing until read)."""
    path = Path(path)
    if not exists(path):
        raise ValueError(f"ckpt_path: {path} does not exist (a .ckpt file or a folder of shards with {META_FILE})")
    if not is_sharded_checkpoint(path):
        return _load(path, mmap=True)
    ckpt = _load(path / META_FILE, mmap=False)
    if weights:
        from lightning.fabric.utilities.load import _load_distributed_checkpoint

        ckpt.update(_load_distributed_checkpoint(path))
    return ckpt


def check_fits_lora(state_dict: dict[str, Any], enabled: bool, rank: int, path: str | Path) -> None:
    """Refuse, before any model is built, a checkpoint whose weights cannot fit `model.lora.*`:
    adapters of another rank (lora_A is [r, in]), adapters where full weights are wanted, or full
    weights where adapters are. One line naming the overrides that fit it."""
    ranks = {int(v.shape[0]) for k, v in state_dict.items() if ".lora_A." in k and hasattr(v, "shape")}
    if ranks and not enabled:
        raise ValueError(f"ckpt_path: {path} holds LoRA adapters (rank {min(ranks)}) but model.lora.enabled is false; "
                         f"pass model.lora.enabled=true model.lora.r={min(ranks)}")
    if enabled and state_dict and not ranks:
        raise ValueError(f"ckpt_path: {path} holds full weights, no LoRA adapters; pass model.lora.enabled=false")
    if ranks and ranks != {rank}:
        found = ", ".join(map(str, sorted(ranks)))
        raise ValueError(f"ckpt_path: {path} holds LoRA adapters of rank {found} but model.lora.r is {rank}; "
                         f"pass model.lora.r={found}")


def _load(path: Path, mmap: bool) -> Any:
    """`torch.load`, with a truncated or foreign file reported as one line naming it."""
    try:
        return torch.load(path, map_location="cpu", mmap=mmap, weights_only=False)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        reason = "not a torch zip archive" if "mmap can only be used" in text or "zip archive" in text else text[:100]
        raise ValueError(
            f"ckpt_path: {path} is not a readable checkpoint ({reason}: truncated, or not written by empo2); "
            f"point ckpt_path at another checkpoint (e.g. an iter_XXXXX.ckpt beside it)"
        ) from None


def resolve_ckpt(cfg: "Config") -> str | None:
    """The checkpoint `ckpt_path` names (`last`: the run's last.ckpt), or None; a missing one is a
    ConfigError naming the path."""
    if cfg.ckpt_path is None:
        return None
    path = cfg.run_dir / "checkpoints" / "last.ckpt" if cfg.ckpt_path == "last" else Path(cfg.ckpt_path)
    if not exists(path):
        raise ConfigError(f"ckpt_path: no checkpoint at {path}")
    return str(path)


def checkpoint_epoch(path: str | None) -> int | None:
    """The iteration a checkpoint resumes at (memory-mapped read: no copy of the weights)."""
    if path is None:
        return None
    try:
        ckpt = read_checkpoint(path, weights=False)
    except ValueError as err:  # missing, truncated or foreign file: one line, before any model loads
        raise ConfigError(str(err)) from None
    state = datamodule_state(ckpt)
    if state is None:
        raise ConfigError(f"ckpt_path: {path} was not written by empo2 (no {DATAMODULE_STATE} state)")
    return int(state["next_iteration"])


def saved_store_versions(path: str) -> dict[str, int]:
    """The LanceDB versions (tip memory, novelty table) a checkpoint restores on resume, by the
    callback state that holds them; empty when the run kept no store."""
    ckpt = read_checkpoint(path, weights=False)
    out: dict[str, int] = {}
    for key, state in (ckpt.get("callbacks") or {}).items():
        for name, value in (state.items() if isinstance(state, dict) else ()):
            if name.endswith("version") and isinstance(value, int):
                out[f"{key}.{name}"] = value
    return out

