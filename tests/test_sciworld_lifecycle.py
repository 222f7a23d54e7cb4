"""A real ScienceWorld run stopped from outside: SIGTERM and SIGINT end it cleanly (exit 128 + signal,
the last complete iteration's checkpoint readable), `kill -9` leaves no JVM behind either.

The trainer runs `python -m empo2.fit` in a child process on the real simulator (one JVM per
environment object, two episodes at once). The test waits for the first checkpoint, sends the
signal at whatever point the run has reached, and then checks every JVM the child had started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import child_env, tiny_overrides
from empo2.checkpoint import checkpoint_epoch

pytest.importorskip("scienceworld")

ROOT = Path(__file__).resolve().parents[1]
SW = {"env.name": "sciworld", "env.options": "{tasks: [find-non-living-thing], train_variations: 2, examples: 0}",
      "env.max_turns": 3, "rollout.tasks_per_iteration": 1, "rollout.group_size": 2, "trainer.max_epochs": 50,
      "mode.p": 1.0, "rollout.max_prompt_tokens": 2048}


def children_named(parent: int, name: str) -> set[int]:
    """Live (not zombie) processes called `name` whose parent is `parent`."""
    out = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if comm == name and int(rest[1]) == parent and rest[0] != "Z":
            out.add(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_and_signal(tiny_model: str, tmp_path: Path, sig: signal.Signals) -> tuple[subprocess.Popen, set[int], Path]:
    """Start the run, wait for its first checkpoint, send `sig`; return the process, its JVMs, the run dir."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "empo2.fit", *tiny_overrides(tiny_model, tmp_path, name="run", **SW)],
                            cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = run / "checkpoints" / "last.ckpt"
    jvms: set[int] = set()
    deadline = time.time() + 600
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        jvms |= children_named(proc.pid, "java")
        time.sleep(0.5)
    assert proc.poll() is None and last.exists(), proc.stderr.read()[-3000:] if proc.poll() is not None else "timeout"
    time.sleep(1.0)  # into the next iteration (rollout, tips or update: whatever it is doing)
    jvms |= children_named(proc.pid, "java")
    assert jvms, "the run started no JVM"
    proc.send_signal(sig)
    return proc, jvms, run


def gone_within(pids: set[int], seconds: float) -> set[int]:
    """The pids still alive after waiting up to `seconds`."""
    deadline = time.time() + seconds
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    return {p for p in pids if alive(p)}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_signal_ends_a_real_scienceworld_run_cleanly(tiny_model, tmp_path, sig):
    proc, jvms, run = start_and_signal(tiny_model, tmp_path, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert f"stopped by {sig.name}: resume with:" in err
    assert not gone_within(jvms, 10.0)  # the JVMs were closed with the run
    assert checkpoint_epoch(str(run / "checkpoints" / "last.ckpt")) >= 1  # whole and readable
    assert not list((run / "checkpoints").glob("*.tmp*"))


@pytest.mark.slow
def test_kill_9_leaves_no_jvm(tiny_model, tmp_path):
    """No handler runs after SIGKILL: the JVMs end because their parent's pipe closes (py4j's
    die_on_exit), which the adapter relies on."""
    proc, jvms, _ = start_and_signal(tiny_model, tmp_path, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not gone_within(jvms, 15.0)
