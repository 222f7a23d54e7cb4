"""TipMemory callback: tip prompts, cleaning, memory growth, and memory restored on resume."""

import csv

import numpy as np
import pytest

from callbacks.tip_memory import TIP_REQUEST, clean_tip, tip_conversation, tip_prompt
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


def _played(warm_model, tokenizer, instances, max_turns=3):
    """A tiny warm-started policy's KeyRoom episodes (prompts chain: `history_tokens: sampled`),
    and the engine that played them, its cache still holding them."""
    import torch
    from transformers import AutoModelForCausalLM

    from conftest import KEYROOM_OPTIONS
    from empo2.conversation import PromptLayout
    from empo2.engines import HFEngine, SamplingParams
    from empo2.envs import KeyRoomEnv
    from empo2.rollout import run_episodes

    engine = HFEngine(AutoModelForCausalLM.from_pretrained(warm_model), tokenizer)
    envs = [KeyRoomEnv(**KEYROOM_OPTIONS) for _ in instances]
    episodes = [Episode(uid=str(i), instance=inst, group=inst) for i, inst in enumerate(instances)]
    torch.manual_seed(0)
    run_episodes(envs, episodes, engine, tokenizer, SamplingParams(8, 1.0, ["\n"]), 1024, max_turns=max_turns,
                 layout=PromptLayout())
    return engine, episodes


def test_episode_tip_prompt_continues_the_last_prompt_and_response(warm_model, tokenizer):
    _, episodes = _played(warm_model, tokenizer, ["find/0", "find/1"])
    for ep in episodes:
        last = ep.steps[-1]
        ids = tip_prompt(ep, tokenizer, 1024)
        assert ids[:len(last.prompt_ids) + len(last.response_ids)] == last.prompt_ids + last.response_ids
        tail = tokenizer.decode(ids[len(last.prompt_ids) + len(last.response_ids):])
        assert f"{last.observation}\n\n{TIP_REQUEST}" in tail and tail.endswith("assistant\n")
        assert ep.conversation.instruction not in tail  # the per-turn action instruction is not asked for
        # over the budget, or with tips shown: the transcript form
        transcript = tip_conversation(ep).render(tokenizer, 1024, with_tips=False).ids
        assert tip_prompt(ep, tokenizer, len(ids) - 1) == tip_conversation(ep).render(tokenizer, len(ids) - 1, with_tips=False).ids
        assert tip_prompt(ep, tokenizer, 1024, form="transcript") == transcript
        ep.steps[0].tips = ["a tip"]
        assert tip_prompt(ep, tokenizer, 1024) == transcript


def test_tips_from_the_cached_episodes_equal_tips_from_a_fresh_encoding(warm_model, tokenizer):
    """After the rollout the engine still holds every episode (ended early or not): the tip call
    encodes only each tail, and greedy tips are the tokens an uncached engine writes."""
    from empo2.engines import HFEngine, SamplingParams

    engine, episodes = _played(warm_model, tokenizer, ["find/0", "find/1", "find/2", "find/3"])
    prompts = [tip_prompt(ep, tokenizer, 1024) for ep in episodes]
    engine.metrics()
    greedy = SamplingParams(max_new_tokens=10, temperature=0.0, stop=[])
    cached = engine.generate(prompts, greedy)
    held = sum(len(ep.steps[-1].prompt_ids) + len(ep.steps[-1].response_ids) - 1 for ep in episodes)
    assert engine.metrics()["engine/prompt_tokens_reused"] >= held / sum(len(p) for p in prompts)
    fresh = HFEngine(engine.model, tokenizer, prefix_cache=False).generate(prompts, greedy)
    assert [g.token_ids for g in cached] == [g.token_ids for g in fresh]


def test_a_tip_continues_an_episode_whose_last_prompt_filled_the_rollout_budget(warm_model, tokenizer):
    """A tip prompt may run past `rollout.max_prompt_tokens` by `memory.tip_prompt_room`: an episode
    whose last prompt filled the rollout budget still has its tip continue the cached episode; with
    no room, it falls back to the transcript form cut to the rollout budget."""
    from types import SimpleNamespace

    from callbacks.tip_memory import TipMemory
    from empo2.iteration_hooks import RolloutContext

    engine, episodes = _played(warm_model, tokenizer, ["find/0", "find/1", "find/2"])
    for ep in episodes:  # each episode's last prompt exactly fills the rollout budget
        last = ep.steps[-1].prompt_ids
        cfg = load_config(None, [f"rollout.max_prompt_tokens={len(last)}"])
        assert cfg.tip_prompt_tokens == len(last) + 128  # the default room
        ids = tip_prompt(ep, tokenizer, cfg.tip_prompt_tokens)
        assert len(ids) > len(last) and ids[:len(last)] == last
        cramped = load_config(None, [f"rollout.max_prompt_tokens={len(last)}", "memory.tip_prompt_room=0"])
        assert tip_prompt(ep, tokenizer, cramped.tip_prompt_tokens) == tip_conversation(ep).render(tokenizer, len(last), with_tips=False).ids
    # The callback asks with the room: the engine reuses every episode's cached rows.
    budget = max(len(ep.steps[-1].prompt_ids) for ep in episodes)
    cfg = load_config(None, [f"rollout.max_prompt_tokens={budget}", "memory.tip_temperature=0", "memory.tip_max_tokens=4"])
    prompts = [tip_prompt(ep, tokenizer, cfg.tip_prompt_tokens) for ep in episodes]
    assert max(len(p) for p in prompts) > budget
    engine.metrics()
    ctx = RolloutContext(trainer=None, module=SimpleNamespace(tokenizer=tokenizer), engine=engine, iteration=0)
    TipMemory(cfg, "unused").generate_tips(ctx, episodes)
    held = sum(len(ep.steps[-1].prompt_ids) + len(ep.steps[-1].response_ids) - 1 for ep in episodes)
    assert engine.metrics()["engine/prompt_tokens_reused"] >= held / sum(len(p) for p in prompts)


def test_the_vllm_model_length_holds_the_longest_tip_prompt_and_its_tip():
    from empo2.engines import ENGINES, HFEngine, VLLMEngine
    from empo2.engines.vllm import model_len_needed

    assert (ENGINES.get("hf"), ENGINES.get("vllm")) == (HFEngine, VLLMEngine)  # the registry names the classes

    cfg = load_config("conf/protocol/keyroom-success.yaml", [])
    assert model_len_needed(cfg) == 512 + 128 + 48  # tip prompt budget + tip, over 512 + 12 for an action
    assert model_len_needed(load_config("conf/protocol/keyroom-success.yaml", ["memory.enabled=false", "mode.p=0"])) == 512 + 12
    assert model_len_needed(load_config("conf/protocol/keyroom-success.yaml", ["memory.tip_source=trace"])) == 512 + 12


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
