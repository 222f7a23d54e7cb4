"""One cell on all the cores, or one cell per core: which gets through a grid of cells sooner.

Why: a protocol grid is ~100 independent cells on a 2-core machine. torch spreads one process over
every core, but not every part of an iteration scales with threads (a 25-row decode step is small,
Python and the environments run on one thread), so N processes of cores/N threads each may finish
more cells per hour than one process on all of them. The only honest answer is the real workload,
timed on this machine, in one run: the first iteration of a cell (`bench/cell_cost.py`, fp32, the
protocol's warm start) run three ways back to back: alone on all the cores, then N copies of the
same command at once on cores/N threads each, then alone again (drift shows as a gap between the
two alone runs). The copies run the same seed, so they do the same work up to the round-off of
their thread counts.

    python bench/cores_split.py [--copies 2] [-- COMMAND...]

Prints the wall times and the grid throughput of the split layout relative to the alone one:
copies × (mean alone time) / (time until the last copy finishes). Above 1, split the grid.
Run it on a quiet machine (pause other work); it takes about 3 × one command's time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

DEFAULT = [sys.executable, "bench/cell_cost.py", "--config", "conf/protocol/keyroom-success-10.yaml",
           "--method", "grpo", "--iterations", "1", "--settings", "fp32"]


def timed(command: list[str], copies: int, threads: int) -> float:
    """Seconds until the last of `copies` simultaneous runs of `command`, each on `threads`
    threads, has finished; a failing copy stops the benchmark with its exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(copies)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            sys.exit(f"cores_split: `{' '.join(command)}` failed ({p.returncode}):\n{err[-2000:]}")
    return time.perf_counter() - t0


def split_throughput(alone_s: list[float], together_s: float, copies: int) -> float:
    """Cells per hour of the split layout over the alone layout: `copies` cells finish in
    `together_s`, one cell in the mean of `alone_s`."""
    return copies * statistics.fmean(alone_s) / together_s


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("command", nargs="*", help="the workload (default: a grpo cell's first iteration and its evaluation)")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    if args.copies < 2 or cores % args.copies:
        sys.exit(f"cores_split: --copies must be at least 2 and divide the {cores} cores")
    command = args.command or DEFAULT
    per_copy = cores // args.copies
    print(f"workload: {' '.join(command)}\n{cores} cores; alone on {cores} threads, "
          f"then {args.copies} copies on {per_copy} each, then alone again")
    first = timed(command, 1, cores)
    print(f"alone       {first:8.1f} s")
    together = timed(command, args.copies, per_copy)
    print(f"{args.copies} together  {together:8.1f} s  ({together / args.copies:.1f} s a cell)")
    second = timed(command, 1, cores)
    print(f"alone again {second:8.1f} s")
    print(f"split / alone grid throughput: {split_throughput([first, second], together, args.copies):.2f}x "
          f"(alone runs differ by {abs(second - first) / min(first, second):.1%})")


if __name__ == "__main__":
    main()
