"""The few collective operations the memory path needs, as no-ops in a single process.

Why objects, not tensors: what ranks exchange here are texts (tips, states) and small records;
`all_gather_object` keeps that simple, and the volume (a few hundred short strings an iteration)
makes its pickling cost irrelevant next to generation.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def gather_objects(obj: Any) -> list[Any]:
    """Every rank gets every rank's object, in rank order."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum_(tensors: list[Any]) -> None:
    """Sum tensors over ranks in place (one flat buffer, one collective)."""
    if not active() or not tensors:
        return
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    flat = _flatten_dense_tensors(tensors)
    dist.all_reduce(flat)
    for t, reduced in zip(tensors, _unflatten_dense_tensors(flat, tensors)):
        t.copy_(reduced)


def barrier() -> None:
    if active():
        dist.barrier()


def release() -> None:
    """Destroy the process group, if one is up. Every command calls it before it returns its exit
    code: a gloo group left to interpreter shutdown can abort the process ('terminate called without
    an active exception', SIGABRT) after the run had finished or had reported its error, turning exit
    code 0 or 2 into -6. Destroying is local to this process, so a rank that stops early can call it."""
    if active():
        dist.destroy_process_group()
