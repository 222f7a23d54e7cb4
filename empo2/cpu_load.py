"""A warning, at the start of a CPU run, when other processes already keep the cores busy.

Why: on a CPU every phase (generation, old log-probs, the update) runs on all of torch's threads,
one per core. Measured on the 2-core machine (docs/BENCHMARKS.md): a batch-32 decode step of the
embedded model took 3.8x longer with two 2-thread processes on the two cores than alone. Protocol
cells run beside tests or beside another cell pay that on every step, and their timings compare
nothing. A run cannot take the cores back, but it can say so once, with the numbers, before it
starts. (Several ranks of one run are not the problem: Lightning gives each rank its share of the
cores.)

How: the share of the last quarter-second the machine's cores spent busy (Linux `/proc/stat`),
read before this run computes anything, so the busy cores are other processes'.
"""

from __future__ import annotations

import time
from pathlib import Path

SAMPLE_S = 0.25
"""How long the cores are watched."""

SLACK_CORES = 0.5
"""Busy cores tolerated beyond the count (a shell, a logger, the sampling itself)."""


def busy_cores(stat_before: list[int], stat_after: list[int], cores: int) -> float:
    """Cores busy between two readings of `/proc/stat`'s `cpu` line (user, nice, system, idle,
    iowait, irq, softirq, steal, ...): cores × (1 − idle share of the elapsed ticks)."""
    delta = [b - a for a, b in zip(stat_before, stat_after)]
    total = sum(delta[:8])
    idle = delta[3] + delta[4]
    return cores * (total - idle) / total if total > 0 else 0.0


def oversubscription_warning(busy: float, cores: int, threads: int) -> str | None:
    """The line to print when `busy` cores of other processes plus this run's `threads` exceed the
    machine's `cores` (with `SLACK_CORES` of slack); None when they fit."""
    if busy + threads <= cores + SLACK_CORES:
        return None
    return (f"empo2: other processes keep {busy:.1f} of this machine's {cores} cores busy and this run computes "
            f"on {threads} threads: the cores are oversubscribed, so every phase runs slower (a decode step "
            f"3.8x slower with two 2-thread jobs on 2 cores, docs/BENCHMARKS.md) and its timings compare "
            f"nothing. Run one job at a time, or give each fewer threads (OMP_NUM_THREADS).")


def _cpu_line(stat: Path) -> list[int]:
    return [int(x) for x in stat.read_text().splitlines()[0].split()[1:]]


def check_cores(threads: int, cores: int, stat: Path = Path("/proc/stat")) -> str | None:
    """Watch the cores for `SAMPLE_S` and return the warning, if any; None where `/proc/stat` is
    not there to read (not Linux)."""
    try:
        before = _cpu_line(stat)
        time.sleep(SAMPLE_S)
        after = _cpu_line(stat)
    except (OSError, ValueError, IndexError):
        return None
    return oversubscription_warning(busy_cores(before, after, cores), cores, threads)
