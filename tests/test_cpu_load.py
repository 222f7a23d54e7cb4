"""The busy-cores warning (empo2/cpu_load.py): the arithmetic by hand, and a real reading."""

import os
from pathlib import Path

import pytest

from empo2.cpu_load import busy_cores, check_cores, oversubscription_warning


def test_busy_cores_by_hand():
    # 400 ticks elapsed on 2 cores (user 100, system 50, idle 200, iowait 50): 1 - 250/400 busy
    before = [1000, 0, 500, 9000, 100, 0, 0, 0, 0, 0]
    after = [1100, 0, 550, 9200, 150, 0, 0, 0, 0, 0]
    assert busy_cores(before, after, 2) == pytest.approx(2 * 150 / 400)
    assert busy_cores(before, before, 2) == 0.0  # no ticks elapsed: nothing known, nothing busy


def test_warning_only_when_threads_and_busy_cores_exceed_the_cores():
    assert oversubscription_warning(0.4, 2, 2) is None  # within the half-core slack
    line = oversubscription_warning(1.2, 2, 2)
    assert line is not None and "1.2 of this machine's 2 cores" in line and "2 threads" in line
    assert oversubscription_warning(6.0, 16, 8) is None  # room to spare


def test_real_reading(tmp_path):
    if not Path("/proc/stat").is_file():
        pytest.skip("no /proc/stat (not Linux)")
    cores = os.cpu_count() or 1
    # with no threads of its own the run can only fit: whatever else runs, no warning
    assert check_cores(0, cores + 1) is None
    # with more threads than cores it never fits
    assert "oversubscribed" in check_cores(cores + 1, cores)
    bad = tmp_path / "stat"
    bad.write_text("not a stat file\n")
    assert check_cores(cores + 1, cores, stat=bad) is None  # unreadable: silent, never an error
