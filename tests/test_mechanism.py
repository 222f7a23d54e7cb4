"""The EMPO² mechanism: off-policy updates distil tip-guided behaviour into the tip-free policy.

Set-up (tiny model, CPU): twelve coloured boxes, the prize is always in the gold one. A supervised
warm start makes the tiny model a policy that, *without* tips, practically never opens the gold box
(it never saw that answer without a tip), and *with* a tip naming the gold box in its prompt opens
it about half the time. The memory is seeded with that tip. Because the tip-free probability is
far below the default masking threshold e^-5, this test lowers `mask.log_delta` to −12 (masking
would otherwise, by design, refuse to train such unlikely tokens). Then, on the same budget:
- off-policy updates (p = 1, q = 1): rollouts see the tip, succeed often, and the tip-free prompt
  is trained on those actions, so log π(open gold box | no tips) rises a lot;
- on-policy updates without memory (p = 0): the tip-free policy rarely finds the prize, so the
  same probability barely moves.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from empo2.config import load_config
from empo2.conversation import Conversation
from empo2.embedder import shared_embedder
from empo2.envs import StepResult, TextEnv
from empo2.fit import fit
from empo2.memory import MemoryStore, entry_content, memory_dir
from empo2.models import build_tiny
from empo2.token_batch import pack, response_logprobs

from conftest import supervised, tiny_overrides

COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown", "gray", "gold"]
SECRET = "open gold box"
TASK = "open the box that holds the prize"


class BoxEnv(TextEnv):
    name = "boxes"
    default_max_turns = 1

    def instances(self, split):
        return ["boxes/0"]

    def reset(self, instance):
        return "Twelve boxes stand in a row: " + ", ".join(COLORS) + ".", {"task": TASK}

    def step(self, action):
        words = action.lower().split()
        color = next((c for c in COLORS if c in words), None)
        won = color == "gold"
        return StepResult("The prize is inside!" if won else "Empty.", 100.0 if won else 0.0, True,
                          {"success": won, "raw_valid": action.strip().lower() == f"open {color} box"})

    def first_message(self, observation, info):
        return f"Task: {info['task']}.\n{observation}\nAnswer like: open <color> box"


SEED_TIP = entry_content("the prize was in the gold box", SECRET, 100.0)


def prompt_ids(tokenizer, tips: list[str]) -> list[int]:
    env = BoxEnv()
    obs, info = env.reset("boxes/0")
    conv = Conversation(instruction=env.turn_instruction())
    conv.add_user(env.first_message(obs, info), tips=tips)
    return conv.render(tokenizer, 4096).ids


def action_ids(tokenizer, action: str) -> list[int]:
    return tokenizer(action, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def warm_box_model(folder, tokenizer) -> None:
    rng = random.Random(0)
    others = [f"open {c} box" for c in COLORS if c != "gold"]
    noise = [entry_content(f"box {c} was empty", f"open {c} box", 0.0) for c in COLORS[:6]]
    data = []
    for _ in range(600):
        if rng.random() < 0.5:  # tip-free: never gold
            p, a = prompt_ids(tokenizer, []), rng.choice(others)
        else:  # the seed tip first, maybe some noise after it: gold half of the time
            tips = [SEED_TIP] + rng.sample(noise, rng.randint(0, 3))
            p, a = prompt_ids(tokenizer, tips), SECRET if rng.random() < 0.5 else rng.choice(others)
        data.append((p, action_ids(tokenizer, a)))
    supervised(str(folder), tokenizer, data, steps=250, batch=32)


@torch.no_grad()
def logp_secret(model, tokenizer, tips: list[str]) -> float:
    model.eval()
    tb = pack([prompt_ids(tokenizer, tips)], [action_ids(tokenizer, SECRET)], tokenizer.pad_token_id)
    return float(response_logprobs(model, tb).sum())


@pytest.fixture(scope="module")
def box_model(embedded_model, tokenizer, tmp_path_factory):
    folder = build_tiny(embedded_model, tmp_path_factory.mktemp("boxes"))
    warm_box_model(folder, tokenizer)
    return str(folder)


def run(box_model, tmp_path, name: str, **over) -> float:
    """Train from the warm model; return the final log π(secret | tip-free prompt)."""
    seeded = tmp_path / f"{name}-seed"  # a memory holding one tip, handed to the run by memory.init_from
    store = MemoryStore(memory_dir(seeded))
    obs, info = BoxEnv().reset("boxes/0")
    key = shared_embedder().encode([f"{TASK}\n{obs}"])  # the state key TipMemory queries with
    store.write(["boxes/0"], key, [SEED_TIP], [100.0])
    settings = {
        "env.cls": "test_mechanism:BoxEnv", "env.options": "{}", "rollout.tasks_per_iteration": 1,
        "rollout.group_size": 8, "model.lora.enabled": False, "optim.lr": 1e-3, "trainer.max_epochs": 3,
        "intrinsic.kind": "none", "mask.log_delta": -12.0, "memory.init_from": str(memory_dir(seeded)), **over,
    }
    trainer = fit(load_config(None, tiny_overrides(box_model, tmp_path, name=name, **settings)))
    return logp_secret(trainer.lightning_module.policy, trainer.lightning_module.tokenizer, [])


@pytest.mark.slow
def test_off_policy_distils_tip_guided_behaviour(box_model, tokenizer, tmp_path):
    base = AutoModelForCausalLM.from_pretrained(box_model)
    before = logp_secret(base, tokenizer, [])
    with_tip = logp_secret(base, tokenizer, [SEED_TIP])
    assert np.exp(before) < 0.01 and np.exp(with_tip) > 0.25  # the premise: tips change behaviour
    off = run(box_model, tmp_path, "distil", **{"mode.p": 1.0, "mode.q": 1.0})
    on = run(box_model, tmp_path, "grpo", **{"mode.p": 0.0})
    print(f"log p(secret | no tips): before {before:.2f} (with tip {with_tip:.2f}), "
          f"after off-policy {off:.2f}, after on-policy {on:.2f}")
    assert off - before > 1.0, (before, off, on)
    assert off - before > 3 * max(on - before, 0.0), (before, off, on)
