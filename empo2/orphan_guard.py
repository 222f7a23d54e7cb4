"""Helper processes that must not outlive their owner, however the owner ends.

Why a separate watchdog process: a process killed with SIGKILL (the OOM killer, `kill -9`, a
scheduler's hard limit) runs no handler, `atexit` or `finally`, so it cannot stop its own children.
vLLM's engine core, when it runs in a child process, then keeps running — holding gigabytes of
memory (and on GPU, the device) — because nothing tells it its client is gone. The kernel does
one thing for every dead process: it closes its file descriptors. So the owner hands the watchdog
the read end of a pipe and keeps the write end: end of file on the pipe means the owner is gone,
and the watchdog stops the guarded processes (SIGTERM, then SIGKILL after a grace period) and
removes the guarded folders. A normal `close()` disarms it first, so it touches nothing.

Why it checks start times: a process id can be reused once its process has ended; the watchdog
signals a pid only while that pid's start time (from /proc) is still the one recorded when it was
armed. Linux only (/proc); elsewhere `OrphanGuard` guards nothing and says so in `armed`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

WATCHDOG = r"""
import os, shutil, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the owner's to handle
pids, folders = {}, []
for arg in sys.argv[1:]:  # pid:<pid>:<start time> or dir:<path>
    kind, rest = arg.split(":", 1)
    if kind == "pid":
        pid, start = rest.split(":")
        pids[int(pid)] = start
    else:
        folders.append(rest)
def started(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None
if sys.stdin.buffer.read() == b"disarm":
    sys.exit(0)
for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
    live = [p for p, t in pids.items() if started(p) == t]
    for pid in live:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        time.sleep(0.1)
        live = [p for p in live if started(p) == pids[p]]
for folder in folders:
    shutil.rmtree(folder, ignore_errors=True)
"""


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), or None
    when there is no such process. With the pid, it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def child_pids(pid: int | None = None) -> set[int]:
    """The direct children of a process (this one by default), from /proc; empty where unavailable."""
    pid = os.getpid() if pid is None else pid
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out.update(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


class OrphanGuard:
    """Stops `pids` and removes `folders` if this process dies before `close()`."""

    def __init__(self, pids: set[int] | list[int], folders: list[str | Path] = ()) -> None:
        args = [f"pid:{p}:{t}" for p in sorted(pids) if (t := start_time(p)) is not None]
        args += [f"dir:{f}" for f in folders]
        self.watchdog: subprocess.Popen | None = None
        if sys.platform.startswith("linux") and args:
            # Its own session: a terminal's signals to the owner's process group do not reach it.
            self.watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, *args], stdin=subprocess.PIPE,
                                             start_new_session=True)

    @property
    def armed(self) -> bool:
        return self.watchdog is not None and self.watchdog.poll() is None

    def close(self) -> None:
        """The owner ended its helpers itself: the watchdog exits without touching anything."""
        watchdog, self.watchdog = self.watchdog, None
        if watchdog is None:
            return
        try:
            assert watchdog.stdin is not None
            watchdog.stdin.write(b"disarm")
            watchdog.stdin.close()
        except OSError:
            pass
        watchdog.wait()
