"""SIGTERM ends a run within seconds with a non-zero exit, keeps a loadable checkpoint of the last
complete iteration, and a resume from it equals a run that was never stopped."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from empo2.checkpoint import read_checkpoint
from empo2.config import load_config
from empo2.fit import fit
from empo2.preemption import Preempted, PreemptionGuard

from conftest import child_env, tiny_overrides
from test_fit import read_metrics, stable

ROOT = Path(__file__).resolve().parents[1]
# Memory modes every iteration, so tips, memory versions and the novelty table are all in play.
OVER = {"env.cls": "signalling_env:SignallingKeyRoom", "trainer.max_epochs": 3, "mode.p": 1.0, "mode.q": 0.5,
        "mode.granularity": "group", "env.train_instances": "[find/0,find/1]"}
EPISODES_PER_ITERATION = 8  # rollout.tasks_per_iteration 2 × rollout.group_size 4 (tiny_overrides)


@pytest.fixture(scope="module")
def straight(warm_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    fit(load_config(None, tiny_overrides(warm_model, out, name="run", **OVER)))
    return out / "run"


def next_iteration(run: Path) -> int:
    ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt", weights=False)
    return int(ckpt["RolloutDataModule"]["next_iteration"])


def assert_resume_equals(straight_run: Path, warm_model, out: Path, name: str) -> None:
    fit(load_config(None, tiny_overrides(warm_model, out, name=name, ckpt_path="last", **OVER)))
    resumed, expected = stable(read_metrics(out / name)), stable(read_metrics(straight_run))
    # The engine/trainer gap is itself float noise (~3e-7) that a child process's engine may round
    # differently. Everything else must match exactly.
    noise = {"train/engine_logprob_gap": 1e-5}
    differing = [(i, k, a.get(k), b.get(k)) for i, (a, b) in enumerate(zip(resumed, expected))
                 for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
                 and not (k in noise and abs(float(a[k]) - float(b[k])) <= noise[k])]
    assert len(resumed) == len(expected) and not differing, differing[:8]
    for k in range(3):
        name_k = f"iter_{k:05d}.jsonl"
        assert (out / name / "trajectories" / name_k).read_text() == (straight_run / "trajectories" / name_k).read_text()


@pytest.mark.slow
def test_sigterm_during_rollout(warm_model, straight, tmp_path):
    stamp = tmp_path / "signalled_at"
    # The child computes with this process's thread count (conftest: 2), so its iteration 0 runs the
    # straight run's kernels: on some CPUs another count splits reductions differently (measured on an
    # AMX Xeon: grad norms 1e-7 apart with 1 thread against 2), and the resume must equal exactly.
    env = dict(child_env(ROOT / "tests"), OMP_NUM_THREADS=str(torch.get_num_threads()),
               EMPO2_TEST_SIGTERM_AT_RESET=str(EPISODES_PER_ITERATION + 3),  # iteration 1, fourth episode
               EMPO2_TEST_SIGNAL_STAMP=str(stamp))
    proc = subprocess.run([sys.executable, "-m", "empo2.fit", *tiny_overrides(warm_model, tmp_path, name="cut", **OVER)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    ended = time.time()
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    last_line = proc.stderr.strip().splitlines()[-1]
    assert last_line.startswith("stopped by SIGTERM: resume with: python -m empo2.fit") and "ckpt_path=last" in last_line
    # Nothing runs after the signal but closing: environments, Lightning's teardown, the interpreter
    # (about 2 s here); 30 s is far inside any scheduler's grace period and far above that.
    assert ended - float(stamp.read_text()) < 30
    assert next_iteration(tmp_path / "cut") == 1  # iteration 0 complete, iteration 1 abandoned
    assert_resume_equals(straight, warm_model, tmp_path, "cut")


class SignalAtUpdate(L.Callback):
    """Sends SIGTERM to this process as the update of iteration 1 starts."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_sigterm_during_update(warm_model, straight, tmp_path):
    cfg = load_config(None, tiny_overrides(warm_model, tmp_path, name="cut", **OVER))
    with pytest.raises(Preempted) as stop, PreemptionGuard():
        fit(cfg, extra_callbacks=[SignalAtUpdate()])
    assert stop.value.exit_code == 143
    assert next_iteration(tmp_path / "cut") == 1
    assert [r["iteration"] for r in read_metrics(tmp_path / "cut")] == ["0.0"]  # no row for the abandoned one
    assert_resume_equals(straight, warm_model, tmp_path, "cut")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_guard_restores_the_previous_handler(sig):
    before = signal.getsignal(sig)
    with pytest.raises(Preempted) as stop, PreemptionGuard():
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the handler raises before this ends
    assert stop.value.exit_code == 128 + sig and signal.getsignal(sig) == before


@pytest.mark.slow
def test_a_run_stopped_before_its_first_checkpoint_starts_again_as_printed(warm_model, tmp_path):
    """SIGTERM in iteration 0: the printed command, run as printed, starts the run again (not refused
    for the stopped attempt's memory and trajectories), and what the attempt wrote is kept."""
    import shlex

    env = dict(child_env(ROOT / "tests"), EMPO2_TEST_SIGTERM_AT_RESET="3",  # iteration 0, fourth episode
               EMPO2_TEST_SIGNAL_STAMP=str(tmp_path / "signalled_at"))
    over = {**OVER, "trainer.max_epochs": 1}
    proc = subprocess.run([sys.executable, "-m", "empo2.fit", *tiny_overrides(warm_model, tmp_path, name="early", **over)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    last_line = proc.stderr.strip().splitlines()[-1]
    kept = tmp_path / "early" / "stopped" / "1"
    prefix = f"stopped by SIGTERM: no iteration completed (what it wrote is kept in {kept}); start again with: "
    assert last_line.startswith(prefix), last_line
    assert (kept / "trajectories").is_dir() or (kept / "memory").is_dir()
    words = shlex.split(last_line[len(prefix):])
    assert words[:3] == ["python", "-m", "empo2.fit"]
    again = subprocess.run([sys.executable, *words[1:]], cwd=ROOT, env=child_env(ROOT / "tests"),
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert next_iteration(tmp_path / "early") == 1
