"""The vLLM engine core in a child process (how every rank of a multi-process run hosts it) ends
with its owner: after `close()`, and after the owner is killed with SIGKILL (no handler runs; the
engine's `OrphanGuard` stops it). Real vLLM (CPU build), the embedded model, one owner process.
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from conftest import child_env  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]

OWNER = r"""
import os, sys, time


def main():
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"  # the engine core in a child, as under several ranks
    from transformers import AutoTokenizer

    from empo2.engines.vllm import VLLMEngine, VLLMSettings
    from empo2.models import load_causal_lm, resolve
    from empo2.orphan_guard import child_pids

    path = resolve("embedded:smollm2-135m-instruct")
    engine = VLLMEngine(load_causal_lm(path), AutoTokenizer.from_pretrained(path), VLLMSettings(
        model_path=path, dtype="float32", max_model_len=512, max_num_seqs=4, lora_rank=None,
        cpu_kv_cache_gb=1, verify_tolerance=1e-3), sys.argv[1])
    print("children", *sorted(child_pids()), flush=True)
    print("sockets", engine._sockets, flush=True)
    if sys.argv[2] == "close":
        engine.close()
        print("closed", flush=True)
    time.sleep(900)


if __name__ == "__main__":  # the engine core is started with spawn: it imports this file
    main()
"""


def ended(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie nobody reaps has ended
    except OSError:
        return True


def is_resource_tracker(pid: int) -> bool:
    try:
        return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def wait_ended(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(map(ended, pids)):
        time.sleep(0.2)
    return [p for p in pids if not ended(p)]


def start_owner(tmp_path: Path, mode: str):
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    owner = subprocess.Popen([sys.executable, str(script), str(tmp_path / "work"), mode], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=child_env())
    lines = {}
    for line in owner.stdout:
        key, *rest = line.split()
        lines[key] = rest
        if key == ("closed" if mode == "close" else "sockets"):
            break
    assert "children" in lines, f"the owner did not start its engine (exit {owner.poll()})"
    return owner, [int(p) for p in lines["children"]], Path(lines["sockets"][0])


@pytest.mark.parametrize("end", ["close", "kill -9"])
def test_the_engine_core_ends_with_its_owner(tmp_path, end):
    owner, children, sockets = start_owner(tmp_path, "close" if end == "close" else "keep")
    try:
        assert children, "the engine core was expected in a child process"
        if end == "kill -9":
            owner.send_signal(signal.SIGKILL)
            owner.wait()
        # close(): vLLM's own shutdown; kill -9: the guard's SIGTERM, then SIGKILL after 5 s. After a
        # close the live owner keeps multiprocessing's resource tracker (one per process, not vLLM's).
        engine = [p for p in children if end != "close" or not is_resource_tracker(p)]
        assert engine, "no engine process among the owner's children"
        assert wait_ended(engine, 60) == [], f"engine processes outlived their owner ({end})"
        assert not sockets.exists()
    finally:
        owner.kill()
        owner.wait()
        for pid in children:
            if not ended(pid):
                subprocess.run(["kill", "-9", str(pid)], check=False)
