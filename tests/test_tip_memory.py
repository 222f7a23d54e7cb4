"""TipMemory callback: tip prompts, cleaning, memory growth, and memory restored on resume."""

import csv

import numpy as np
import pytest

from callbacks.tip_memory import TIP_REQUEST, clean_tip, tip_conversation
from empo2.config import load_config
from empo2.conversation import Conversation
from empo2.episode import Episode, Step
from empo2.fit import fit
from empo2.memory import MemoryStore, memory_dir
from empo2.novelty import NoveltyTable

from conftest import tiny_overrides


def test_clean_tip():
    assert clean_tip("  <tip>Go to the\n kitchen first.</tip> ") == "Go to the kitchen first."
    assert clean_tip(" \n ... 123 ") == ""  # nothing usable: no entry is written


def test_tip_conversation_is_the_episode_without_tips_plus_the_request():
    conv = Conversation(instruction="One action.")
    conv.add_user("You are in the hallway.", tips=["old tip"])
    conv.add_assistant("go to kitchen")
    ep = Episode(uid="u", instance="find/0", group="g", conversation=conv)
    ep.steps.append(Step([1], [2], [-0.1], "go to kitchen", "go to kitchen", "You are in the kitchen.", 50.0))
    chat = tip_conversation(ep).chat()
    assert [m["role"] for m in chat] == ["user", "assistant", "user"]
    assert "old tip" not in str(chat) and "One action." not in str(chat)
    assert chat[-1]["content"] == f"You are in the kitchen.\n\n{TIP_REQUEST}"


def _memory_rows(run_dir):
    store = MemoryStore(memory_dir(run_dir))
    return sorted((slot, c) for slot in store.counts() for c in store.table.rows(slot).contents)


@pytest.mark.slow
def test_memory_grows_and_resume_restores_the_checkpoint_memory(warm_model, tmp_path):
    over = {"mode.p": 1.0, "mode.q": 0.5, "trainer.max_epochs": 2, "env.train_instances": "[find/0,find/1]"}
    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="m", **over)))
    run = tmp_path / "m"
    with (run / "logs" / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    entries = [float(r["memory/entries"]) for r in rows]
    assert entries[0] > 0 and entries[1] > entries[0]
    assert float(rows[1]["memory/tips_per_retrieval"]) > 0  # iteration 1 retrieved what iteration 0 wrote
    at_checkpoint = _memory_rows(run)
    novelty_at_checkpoint = NoveltyTable(memory_dir(run)).counts()
    # A crashed continuation wrote more after the checkpoint ...
    key = np.zeros((1, 384), dtype=np.float32)
    key[0, 0] = 1
    MemoryStore(memory_dir(run)).write(["find/0"], key, ["written after the checkpoint"], [100.0])
    NoveltyTable(memory_dir(run)).count(["find/0"], key)
    assert _memory_rows(run) != at_checkpoint
    # ... resuming restores exactly the memory that matched the checkpoint's weights.
    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="m", ckpt_path="last", **over)))
    assert _memory_rows(run) == at_checkpoint
    assert NoveltyTable(memory_dir(run)).counts() == novelty_at_checkpoint


def test_warns_once_when_no_instance_of_the_iteration_has_tips(tmp_path):
    """Memory holds tips for other instances only: every retrieval is empty, which a run should hear
    about once; one retrieval with a slot, or an empty memory (iteration 0), is no reason to warn."""
    import warnings

    from callbacks.tip_memory import TipMemory

    cb = TipMemory(load_config(None, []), tmp_path)
    cb._slots = set()
    cb.stats.update(retrieval_calls=4.0, calls_without_slot=4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cb._warn_if_memory_cannot_help()  # empty memory: nothing could have been found
        cb._slots = {"find/3"}
        cb.stats.update(calls_without_slot=3.0)
        cb._warn_if_memory_cannot_help()  # one retrieval had a slot
    cb.stats.update(calls_without_slot=4.0)
    with pytest.warns(UserWarning, match=r"^memory: 1 instance\(s\) have tips, but none of this iteration's instances"):
        cb._warn_if_memory_cannot_help()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cb._warn_if_memory_cannot_help()  # once per run
