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
from typing import Any

import torch

META_FILE = "meta.pt"


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
