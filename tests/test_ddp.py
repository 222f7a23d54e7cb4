"""Two CPU processes under DDP: ranks stay identical, and memory and novelty are written once.

Runs `python -m empo2.fit` with `trainer.strategy=ddp trainer.devices=2` (Lightning re-launches the
command for rank 1), every iteration in a memory mode so retrieval, tip writing and novelty all
cross ranks. Then checks, from the run's own files:
- the module's per-iteration check that both ranks hold the same weights passed (gap exactly 0);
- each rank played its own group (one trajectory file per rank per iteration);
- the memory holds exactly the distinct entries of *both* ranks' episodes, each once;
- the novelty table holds exactly the states that earned the full bonus (n_t = 1) on either rank.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from empo2.memory import MemoryStore, entry_content, memory_dir
from empo2.novelty import NoveltyTable

from conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ddp_two_processes(warm_model, tmp_path):
    over = tiny_overrides(warm_model, tmp_path, name="ddp", **{
        "trainer.strategy": "ddp", "trainer.devices": 2, "rollout.tasks_per_iteration": 2,
        "mode.p": 1.0, "mode.q": 0.5, "env.train_instances": "[find/0,find/1]", "trainer.max_epochs": 2,
    })
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "empo2.fit", *over], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ddp"
    with (run / "logs" / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(float(r["train/rank_weight_gap"]) == 0.0 for r in rows)
    assert all(float(r["train/grad_norm"]) > 0 for r in rows)

    episodes = []
    for it in range(2):
        per_rank = [[json.loads(line) for line in (run / "trajectories" / f"iter_{it:05d}.rank{r}.jsonl").open()]
                    for r in range(2)]
        assert [len(eps) for eps in per_rank] == [4, 4]
        assert {ep["group"] for ep in per_rank[0]}.isdisjoint({ep["group"] for ep in per_rank[1]})
        episodes += per_rank[0] + per_rank[1]

    expected = {(ep["instance"], entry_content(ep["tip"], s["action"], ep["return"]))
                for ep in episodes if ep["tip"] for s in ep["steps"]}
    store = MemoryStore(memory_dir(run))
    stored = [(slot, c) for slot in store.counts() for c in store.table.rows(slot).contents]
    assert len(stored) == len(set(stored)) == len(expected) and set(stored) == expected

    novel = sum(1 for ep in episodes for s in ep["steps"] if s["intrinsic"] == 1.0)
    assert sum(NoveltyTable(memory_dir(run)).counts().values()) == novel
