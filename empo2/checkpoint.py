"""Reading a Lightning checkpoint outside the trainer, whole file or folder of shards alike.

Why: `fit` must know the iteration a checkpoint resumes at before the trainer exists, and
`evaluate`/`adapt` load weights into a single process. Sharded strategies (fsdp, fsdp2 with
`sharding.sharded_checkpoint`) write a folder: every rank's shards in `torch.distributed.checkpoint`
format plus `meta.pt` with everything else (loop, datamodule and callback states). Here both kinds
read as the same dict.
"""

from __future__ import annotations

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
    if not is_sharded_checkpoint(path):
        return torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    ckpt = torch.load(path / META_FILE, map_location="cpu", weights_only=False)
    if weights:
        from lightning.fabric.utilities.load import _load_distributed_checkpoint

        ckpt.update(_load_distributed_checkpoint(path))
    return ckpt
