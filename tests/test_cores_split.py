"""`bench/cores_split.py`: the throughput ratio by hand, and the thread count each copy is given."""

import importlib.util
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("cores_split", Path(__file__).parents[1] / "bench" / "cores_split.py")
cores_split = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cores_split)


def test_split_throughput_by_hand():
    # alone: 90 s and 100 s (mean 95 s a cell); two copies together: 2 cells in 152 s -> 2 * 95 / 152 = 1.25
    assert cores_split.split_throughput([90.0, 100.0], 152.0, 2) == pytest.approx(1.25, rel=1e-12)
    # no gain: two copies take exactly twice one alone
    assert cores_split.split_throughput([50.0], 100.0, 2) == pytest.approx(1.0, rel=1e-12)


def test_each_copy_runs_on_the_threads_it_is_given(tmp_path):
    # the copy exits non-zero unless both thread variables say 3, and writes a file named by its pid
    check = ("import os, sys; ok = os.environ['OMP_NUM_THREADS'] == os.environ['MKL_NUM_THREADS'] == '3'; "
             f"open(os.path.join({str(tmp_path)!r}, str(os.getpid())), 'w').close(); sys.exit(0 if ok else 5)")
    seconds = cores_split.timed([sys.executable, "-c", check], copies=2, threads=3)
    assert seconds > 0 and len(list(tmp_path.iterdir())) == 2


def test_a_failing_copy_stops_the_benchmark_with_its_status():
    with pytest.raises(SystemExit, match=r"failed \(7\)"):
        cores_split.timed([sys.executable, "-c", "import sys; sys.exit(7)"], copies=2, threads=1)
