"""Stopping a run when the scheduler (or Ctrl-C) says so: SIGTERM and SIGINT end it within seconds,
with a non-zero exit.

Why not Lightning's own handling: Lightning notes the SIGTERM and raises its `SIGTERMException`
only at the next batch boundary. One RL iteration is one batch here and can last minutes (rollout,
tips, update), longer than a scheduler's grace period, and the exception is a `SystemExit`, so the
process then exits with code 0, which a scheduler reads as success.

How: while a run is guarded, the signal raises `Preempted` at once in the main thread, wherever it
is. `Preempted` is a `BaseException` (as `KeyboardInterrupt` is), so the `except Exception` that
keeps one broken environment from ending a rollout does not swallow it. Abandoning the iteration
is safe because everything on disk is written to be resumable after a kill at any point: a
checkpoint file appears whole or not at all, and resuming rolls memory, novelty table, metrics and
trajectories back to the checkpoint's iteration. The command prints one line saying where to
resume and exits with 128 + the signal number (143 for SIGTERM, 130 for SIGINT), the shell's
convention. SIGINT is handled the same way so that Ctrl-C does not go through Lightning's own
KeyboardInterrupt path, which reports a "graceful shutdown" and exits 1 after the same teardown.

SIGUSR1 is left to Lightning: under SLURM with auto-requeue its handler saves a checkpoint and
requeues the job (a handler of ours on SIGUSR1 would stop Lightning from installing it); the
SIGTERM that SLURM sends afterwards then ends the run here.

Imports inside functions are deliberate: this module is imported by every entry point before
anything heavy loads.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Callable, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(BaseException):
    """The run was asked to stop by a signal; the iteration in progress is abandoned."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class PreemptionGuard:
    """While entered, SIGTERM and SIGINT raise `Preempted` in the main thread; the handlers that
    were there before come back on exit. Outside the main thread it does nothing (signals are
    delivered to the main thread only)."""

    def __init__(self, signals: tuple[signal.Signals, ...] = SIGNALS) -> None:
        self.signals = signals
        self._previous: dict[int, Any] = {}

    def _raise(self, signum: int, frame: Optional[FrameType]) -> None:
        raise Preempted(signum)

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._raise)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def resume_hint(run_dir: Any, command: str, set_aside: Any = None) -> str:
    """The one line a preempted command prints: where the last complete iteration is kept, or,
    when none completed, the command that starts the run again (`set_aside`: where the stopped
    attempt's files were moved so that command is not refused)."""
    from pathlib import Path

    from empo2.checkpoint import exists

    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    import shlex

    command = shlex.join(w for w in shlex.split(command) if not w.startswith("ckpt_path="))
    if exists(last):
        return f"resume with: {command} ckpt_path=last   (last complete iteration: {last})"
    kept = f" (what it wrote is kept in {set_aside})" if set_aside else ""
    return f"no iteration completed{kept}; start again with: {command}"


def run_guarded(fn: Callable[[], Any], on_preempt: Callable[[Preempted], str]) -> tuple[Any, int]:
    """Run `fn` under a `PreemptionGuard`: (its result, 0), or (None, exit code) after printing
    `on_preempt`'s line when a signal stopped it."""
    import sys

    try:
        with PreemptionGuard():
            return fn(), 0
    except Preempted as stop:
        print(f"{stop}: {on_preempt(stop)}", file=sys.stderr, flush=True)
        return None, stop.exit_code
