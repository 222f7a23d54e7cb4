"""Two CPU processes under DDP: ranks stay identical, memory and novelty are written once, resume is exact.

Runs `python -m empo2.fit` with `trainer.strategy=ddp trainer.devices=2` (Lightning re-launches the
command for rank 1), every iteration in a memory mode so retrieval, tip writing and novelty all
cross ranks. Then checks, from the run's own files:
- the module's per-iteration check that both ranks hold the same weights passed (gap exactly 0);
- each rank played its own group (one trajectory file per rank per iteration);
- the memory holds exactly the distinct entries of *both* ranks' episodes, each once;
- the novelty table holds exactly the states that earned the full bonus (n_t = 1) on either rank;
- a run stopped after one iteration and resumed logs what the uninterrupted run logged.
"""

import json

import pytest

from conftest import assert_memory_written_once, fit_processes, tiny_overrides
from test_fit import read_metrics, stable

MEMORY_EVERY_ITERATION = {"rollout.tasks_per_iteration": 2, "mode.p": 1.0, "mode.q": 0.5,
                          "env.train_instances": "[find/0,find/1]"}


def rank_episodes(run, iterations: int, ranks: int = 2) -> list[dict]:
    """Every rank's episodes; asserts each rank played its own, disjoint groups."""
    episodes = []
    for it in range(iterations):
        per_rank = [[json.loads(line) for line in (run / "trajectories" / f"iter_{it:05d}.rank{r}.jsonl").open()]
                    for r in range(ranks)]
        assert [len(eps) for eps in per_rank] == [4] * ranks
        assert {ep["group"] for ep in per_rank[0]}.isdisjoint({ep["group"] for ep in per_rank[1]})
        episodes += [ep for eps in per_rank for ep in eps]
    return episodes


@pytest.mark.slow
def test_ddp_two_processes_and_exact_resume(warm_model, tmp_path):
    def over(name, **extra):
        return tiny_overrides(warm_model, tmp_path, name=name, **{
            "trainer.strategy": "ddp", "trainer.devices": 2, "trainer.max_epochs": 2,
            **MEMORY_EVERY_ITERATION, **extra})

    fit_processes(over("ddp"))
    run = tmp_path / "ddp"
    rows = read_metrics(run)
    assert len(rows) == 2 and all(float(r["train/rank_weight_gap"]) == 0.0 for r in rows)
    assert all(float(r["train/grad_norm"]) > 0 for r in rows)
    assert_memory_written_once(run, rank_episodes(run, 2))

    fit_processes(over("resumed", **{"trainer.max_epochs": 1}))
    fit_processes(over("resumed", ckpt_path="last"))
    assert stable(read_metrics(tmp_path / "resumed")) == stable(rows)
    for it in range(2):
        for r in range(2):
            name = f"iter_{it:05d}.rank{r}.jsonl"
            assert (run / "trajectories" / name).read_text() == (tmp_path / "resumed" / "trajectories" / name).read_text()
