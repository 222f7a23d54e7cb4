"""`OrphanGuard`: helper processes and folders do not outlive an owner killed with SIGKILL, and a
closed guard touches nothing. Real processes: an owner process starts a long `sleep`, arms a guard
for it and for a folder, and is killed."""

import os
import signal
import subprocess
import sys
import time

import pytest

from empo2.orphan_guard import WATCHDOG, OrphanGuard, child_pids, start_time

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guard reads /proc (Linux)")

OWNER = r"""
import subprocess, sys, time
from empo2.orphan_guard import OrphanGuard
helper = subprocess.Popen(["sleep", "600"])
guard = OrphanGuard([helper.pid], [sys.argv[1]])
print(helper.pid, guard.watchdog.pid, flush=True)
if sys.argv[2] == "close":
    guard.close()
    print("closed", flush=True)
time.sleep(600)
"""


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":  # a zombie nobody reaps: ended
                    return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def start_owner(tmp_path, mode):
    folder = tmp_path / "sockets"
    folder.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(folder), mode], stdout=subprocess.PIPE, text=True)
    helper, watchdog = map(int, owner.stdout.readline().split())
    return owner, helper, watchdog, folder


def test_a_killed_owner_takes_its_helpers_and_folders_with_it(tmp_path):
    owner, helper, watchdog, folder = start_owner(tmp_path, "keep")
    assert start_time(helper) is not None and folder.is_dir()
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    # SIGTERM ends `sleep` at once; the watchdog's grace period (5 s) bounds the wait otherwise.
    assert gone_within(helper, 15), "the helper outlived its killed owner"
    assert gone_within(watchdog, 15)
    assert not folder.exists()


def test_a_closed_guard_touches_nothing(tmp_path):
    owner, helper, watchdog, folder = start_owner(tmp_path, "close")
    assert owner.stdout.readline().strip() == "closed"
    assert gone_within(watchdog, 10)  # disarmed: it exits on its own
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    try:
        time.sleep(1)
        assert start_time(helper) is not None and folder.is_dir()  # nothing was stopped or removed
    finally:
        os.kill(helper, signal.SIGKILL)


def test_a_reused_pid_is_not_signalled(tmp_path):
    """The guard names a process by pid *and* start time: a pid whose start time changed (reused by
    another process) is left alone. Here a live process is armed under a wrong start time."""
    helper = subprocess.Popen(["sleep", "600"])
    try:
        guard = OrphanGuard([])  # nothing to guard: no watchdog at all
        assert guard.watchdog is None and not guard.armed
        watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, f"pid:{helper.pid}:1"], stdin=subprocess.PIPE)
        watchdog.stdin.close()  # end of file: the "owner" is gone
        assert watchdog.wait(timeout=30) == 0
        assert helper.poll() is None  # start time 1 is not this process's: not signalled
    finally:
        helper.kill()
        helper.wait()


def test_child_pids_lists_this_process_children():
    helper = subprocess.Popen(["sleep", "600"])
    try:
        assert helper.pid in child_pids()
    finally:
        helper.kill()
        helper.wait()
