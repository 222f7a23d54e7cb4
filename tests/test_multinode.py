"""Several "nodes" on one host, started the way a cluster launcher starts them: one process per node
with `NODE_RANK`, `MASTER_ADDR` and `MASTER_PORT` set and `trainer.num_nodes`; Lightning on each node
starts that node's processes. What must hold, checked against the single-node run of the same world
size from the runs' own files:
- the rollouts, metrics, memory and novelty are the single-node run's (a global rank plays the same
  groups whichever node it is on): under ddp on KeyRoom across a stop and a resume, under fsdp2 on
  real ScienceWorld, where each node's JVMs are its own and all end with it;
- global rank 0 alone writes the memory and the checkpoints (written once, the same files);
- a node-local `out_dir` (here: a folder per node) is refused at start in one line on every node.
"""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_memory_written_once, child_env, fit_processes, tiny_overrides
from test_ddp import MEMORY_EVERY_ITERATION, rank_episodes
from test_fit import read_metrics, stable

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_nodes(per_node: list[list[str]], devices: int = 1, timeout: int = 900) -> list[subprocess.CompletedProcess]:
    """One `python -m empo2.fit` per node (its overrides), as SLURM or a job script starts them."""
    port = str(free_port())
    procs = [subprocess.Popen(
        [sys.executable, "-m", "empo2.fit", *over, f"trainer.num_nodes={len(per_node)}", f"trainer.devices={devices}"],
        cwd=ROOT, env=dict(child_env(), NODE_RANK=str(k), MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k, over in enumerate(per_node)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def overrides(warm_model, out, name, **extra):
    return tiny_overrides(warm_model, out, name=name, **{"trainer.strategy": "ddp", "trainer.max_epochs": 2,
                                                         **MEMORY_EVERY_ITERATION, **extra})


@pytest.mark.slow
def test_two_nodes_equal_one_node_of_two_processes_across_a_resume(warm_model, tmp_path):
    fit_processes(overrides(warm_model, tmp_path, "one-node", **{"trainer.devices": 2}))
    single = tmp_path / "one-node"

    cut = overrides(warm_model, tmp_path, "two-nodes", **{"trainer.max_epochs": 1})
    assert all(r.returncode == 0 for r in launch_nodes([cut, cut])), "first iteration"
    resumed = overrides(warm_model, tmp_path, "two-nodes", ckpt_path="last")
    runs = launch_nodes([resumed, resumed])
    assert all(r.returncode == 0 for r in runs), [r.stderr[-2000:] for r in runs]
    multi = tmp_path / "two-nodes"

    assert stable(read_metrics(multi)) == stable(read_metrics(single))
    for it in range(2):
        for rank in range(2):
            name = f"iter_{it:05d}.rank{rank}.jsonl"
            assert (multi / "trajectories" / name).read_text() == (single / "trajectories" / name).read_text()
    assert_memory_written_once(multi, rank_episodes(multi, 2))
    # checkpoints: rank 0's files only, the same names as one node writes
    assert sorted(p.name for p in (multi / "checkpoints").iterdir()) == sorted(p.name for p in (single / "checkpoints").iterdir())
    assert not (multi / ".shared-run-dir").exists()


@pytest.mark.slow
def test_a_node_local_out_dir_is_refused_on_every_node(warm_model, tmp_path):
    """The same path on two machines' local disks is two folders: here, one folder per node."""
    nodes = [overrides(warm_model, tmp_path / f"node{k}", "run", **{"trainer.max_epochs": 1}) for k in range(2)]
    runs = launch_nodes(nodes)
    for k, r in enumerate(runs):
        assert r.returncode == 2, (k, r.stderr[-2000:])
        line = r.stderr.strip().splitlines()[-1]
        assert line.startswith(f"config error: out_dir: {tmp_path / f'node{k}'} is not shared between the run's "
                               f"processes (rank 1 on {socket.gethostname()} cannot read what rank 0 writes in "), line
        assert line.endswith("put out_dir on a filesystem every node mounts: rank 0 writes the checkpoints and the "
                             "memory, and every rank reads them"), line
    assert not (tmp_path / "node0" / "run" / "checkpoints").exists()  # stopped before the first iteration


@pytest.mark.parametrize("outcome", ["finished", "config error"])
def test_every_command_destroys_its_process_group_before_it_returns(outcome, tmp_path):
    """A gloo group left to interpreter shutdown can abort a finished process (SIGABRT, exit -6 where
    the run had returned 0 or 2: seen in CI on the refused node above). The shared command line
    therefore destroys the group however the body ended; here in a real one-process gloo group."""
    import torch.distributed as dist

    from empo2.cli import Command, run_command
    from empo2.config import ConfigError

    def body(cfg):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
        assert dist.is_initialized()
        if outcome == "config error":
            raise ConfigError("out_dir: refused")
        return 0

    code = run_command(Command("empo2.fit", "fit"), ["trainer.max_epochs=1"], body)
    assert code == (0 if outcome == "finished" else 2)
    assert not dist.is_initialized()


def java_children(pid: int) -> set[int]:
    from test_sciworld_lifecycle import children_named

    return children_named(pid, "java")


@pytest.mark.slow
def test_two_nodes_fsdp2_on_scienceworld_equal_one_node_and_close_their_jvms(tiny_model, tmp_path):
    """FSDP2 on real ScienceWorld, memory modes on: 2 nodes × 1 process play and log what 1 node × 2
    processes does; each node starts its own JVMs, and every one of them has ended when its node has."""
    pytest.importorskip("scienceworld")
    from test_sciworld_lifecycle import alive

    sw = {"env.name": "sciworld", "env.options": "{tasks: [find-non-living-thing], train_variations: 2, examples: 0}",
          "env.max_turns": 3, "rollout.tasks_per_iteration": 2, "rollout.group_size": 2, "trainer.max_epochs": 1,
          "mode.p": 1.0, "mode.q": 0.5, "rollout.max_prompt_tokens": 2048, "trainer.strategy": "fsdp2"}
    fit_processes(tiny_overrides(tiny_model, tmp_path, name="one-node", **{**sw, "trainer.devices": 2}))
    over = tiny_overrides(tiny_model, tmp_path, name="two-nodes", **sw)
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-m", "empo2.fit", *over, "trainer.num_nodes=2", "trainer.devices=1"],
                              cwd=ROOT, env=dict(child_env(), NODE_RANK=str(k), MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(2)]
    jvms: list[set[int]] = [set(), set()]
    while any(p.poll() is None for p in procs):
        for k, p in enumerate(procs):
            jvms[k] |= java_children(p.pid)
        time.sleep(0.3)
    errors = [p.stderr.read()[-2000:] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert jvms[0] and jvms[1] and not jvms[0] & jvms[1]  # each node played on JVMs of its own
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(j) for j in jvms[0] | jvms[1]):
        time.sleep(0.2)
    assert not [j for j in jvms[0] | jvms[1] if alive(j)]
    single, multi = tmp_path / "one-node", tmp_path / "two-nodes"
    assert stable(read_metrics(multi)) == stable(read_metrics(single))
    for rank in range(2):
        name = f"iter_00000.rank{rank}.jsonl"
        assert (multi / "trajectories" / name).read_text() == (single / "trajectories" / name).read_text()
    assert_memory_written_once(multi, [json.loads(line) for r in range(2)
                                       for line in (multi / "trajectories" / f"iter_00000.rank{r}.jsonl").open()])
