"""Several `empo2.compare` processes on one comparison folder: who runs which cell.

Why: a comparison is a grid of independent cells (method × task × seed), and the machines it runs
on have more workers than one process uses: a GPU node runs one process per GPU, a small CPU box one
per core. Starting the same `empo2.compare` command once per worker should split the grid, not run
every cell N times or let the last writer's `results.csv` erase the others' rows. Three rules do it:

- a process runs a cell only while it holds the cell's lock file (`claim`: never waits; a cell
  another process holds is skipped, and the next run of the command picks it up if that process
  died);
- a finished cell's row is added to the table under the table's lock, read from disk and merged
  (`table_lock` around `empo2.comparison_table.record_cell`), never written from a process's own stale copy;
- a shared warm start is trained by whichever process needs it first; the others wait for it
  (`held`).

The locks are operating-system file locks (`filelock`; `flock` on Linux): the kernel releases them
when the holder exits, killed or crashed included, so no stale lock ever blocks a continued run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

TABLE_LOCK = "results.lock"
"""In `<run>/compare/`: held while a process reads, merges and rewrites the comparison's table."""


def cell_lock(cell_run_dir: Path) -> Path:
    """A cell's lock file: beside its run folder (`<task>-seed<k>/<method>.lock`), so that removing
    an unfinished cell's folder to start it over leaves the lock in place."""
    return cell_run_dir.with_name(cell_run_dir.name + ".lock")


@contextmanager
def claim(lock_file: Path) -> Iterator[bool]:
    """Hold `lock_file` for the block if no other process holds it (yields True); else yield False
    at once, holding nothing."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


@contextmanager
def held(lock_file: Path, waiting: str | None = None) -> Iterator[None]:
    """Hold `lock_file` for the block, waiting as long as another process holds it (printing
    `waiting` once when there is a wait)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if waiting:
            print(waiting, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def table_lock(compare_dir: Path) -> Path:
    return compare_dir / TABLE_LOCK
