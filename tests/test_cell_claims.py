"""Several compare processes on one folder: cell claims, the merged table, the shared warm start."""

import csv
import subprocess
import sys
import threading

from empo2.cell_claims import cell_lock, claim, held
from empo2.comparison_table import read_results_csv, record_cell

from conftest import child_env

HOLDER = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])  # kept referenced: a collected FileLock releases its lock
lock.acquire()
print("held", flush=True)
sys.stdin.readline()  # until the test says so, or is killed
"""


def test_a_claim_is_exclusive_and_ends_with_its_holder(tmp_path):
    lock = cell_lock(tmp_path / "task-seed0" / "grpo")
    assert lock == tmp_path / "task-seed0" / "grpo.lock"
    with claim(lock) as mine:
        assert mine
        with claim(lock) as again:
            assert not again  # another holder (here another open of the file) is refused at once
    with claim(lock) as mine:
        assert mine  # released at the end of the block
    # Held by another process: refused; that process killed: the kernel releases it.
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert proc.stdout.readline().strip() == "held"
        with claim(lock) as mine:
            assert not mine
    finally:
        proc.kill()
        proc.wait()
    with claim(lock) as mine:
        assert mine


def test_held_waits_for_the_other_holder(tmp_path, capsys):
    lock = tmp_path / "task" / "warm_start.lock"
    order = []

    def wait_then_note():
        with held(lock, waiting="waiting for it"):
            order.append("waiter")

    with held(lock):
        waiter = threading.Thread(target=wait_then_note)
        waiter.start()
        while "waiting for it" not in capsys.readouterr().out:  # the waiter found the lock taken
            waiter.join(0.01)
        order.append("holder")
    waiter.join()
    assert order == ["holder", "waiter"]


def test_rows_from_two_writers_are_merged_not_overwritten(tmp_path):
    """Each process records its finished cell against the table on disk, so two processes that each
    started from an empty table keep both rows; recording a cell again replaces its row."""
    out = tmp_path / "compare"
    out.mkdir()
    row = lambda method, seed, ret: {"method": method, "task": "keyroom", "seed": seed, "return": ret,  # noqa: E731
                                     "success_rate": 0.5, "minutes": 1.0}
    curve = lambda method, seed: [{"method": method, "task": "keyroom", "seed": seed, "iteration": k, "return": k}  # noqa: E731
                                  for k in range(2)]
    record_cell(out, row("grpo", 0, 1.0), curve("grpo", 0), "t")
    record_cell(out, row("empo2", 0, 2.0), curve("empo2", 0), "t")
    record_cell(out, row("grpo", 0, 3.0), curve("grpo", 0), "t")
    results = read_results_csv(out / "results.csv")
    assert [(r["method"], r["return"]) for r in results] == [("empo2", "2.0"), ("grpo", "3.0")]
    assert [(c["method"], c["iteration"]) for c in read_results_csv(out / "curves.csv")] == [
        ("empo2", "0"), ("empo2", "1"), ("grpo", "0"), ("grpo", "1")]
    summary = (out / "summary.md").read_text()
    assert "| grpo | 1 | 3.0 | 0.50 |" in summary  # one seed: no spread to show
    record_cell(out, row("grpo", 1, 5.0), curve("grpo", 1), "t")
    assert "| grpo | 2 | 4.0 ± 1.4 | 0.50 ± 0.00 |" in (out / "summary.md").read_text()  # sd of 3, 5 = sqrt(2)
    with (out / "results.csv").open() as fh:
        assert next(csv.reader(fh)) == ["method", "task", "seed", "return", "success_rate", "minutes"]
