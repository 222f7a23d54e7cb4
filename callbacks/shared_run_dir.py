"""SharedRunDir: in a run of several processes, every rank must see the run directory that global
rank 0 writes; where one cannot (a node-local `out_dir` on a cluster), the run stops before its
first iteration with one line naming `out_dir`.

Why: rank 0 alone writes the run directory's shared state (config, checkpoints, the tip memory, the
novelty table, metrics), and the other ranks read it: the memory when they retrieve tips, the
checkpoint when they resume. On one machine that is one folder. Across nodes it holds only if
`out_dir` is on a filesystem every node mounts; on a node-local disk (`/tmp`, local scratch) a
second node would retrieve from an empty memory and resume from no checkpoint, and its rollouts would
quietly differ from rank 0's. The check: rank 0 writes a fresh token into the run directory, every
rank reads it back, and all ranks learn who could not.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import lightning as L

from empo2 import distributed as D
from empo2.config_error import ConfigError

MARKER = ".shared-run-dir"


def unshared_ranks(run_dir: Path, rank: int) -> list[tuple[int, str]]:
    """(rank, host) of every rank that cannot read what rank 0 wrote into `run_dir` just now. A
    collective: every rank calls it at the same point."""
    marker = run_dir / MARKER
    token = secrets.token_hex(16) if rank == 0 else None
    if rank == 0:
        marker.write_text(token)
    token = D.gather_objects(token)[0]  # rank 0 wrote before this collective began
    try:
        seen = marker.read_text() == token
    except OSError:
        seen = False
    reports = D.gather_objects((rank, socket.gethostname(), seen))
    if rank == 0:
        marker.unlink(missing_ok=True)
    return [(r, host) for r, host, ok in reports if not ok]


class SharedRunDir(L.Callback):
    def __init__(self, run_dir: Path, out_dir: str) -> None:
        self.run_dir, self.out_dir = Path(run_dir), out_dir

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size == 1:
            return
        blind = unshared_ranks(self.run_dir, trainer.global_rank)
        if blind:
            who = ", ".join(f"rank {r} on {host}" for r, host in blind)
            raise ConfigError(
                f"out_dir: {self.out_dir} is not shared between the run's processes ({who} cannot read what "
                f"rank 0 writes in {self.run_dir}); put out_dir on a filesystem every node mounts: rank 0 "
                f"writes the checkpoints and the memory, and every rank reads them")
