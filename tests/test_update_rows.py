"""Training rows per EMPO² mode (EMPO2.md §6.3, §6.4): which prompt each log-prob is taken on, and
the low-probability mask, against hand-worked numbers; and the mode sampler (§2)."""

from collections import Counter

import pytest

from datamodules import RolloutDataModule
from empo2.config import load_config
from empo2.conversation import Conversation
from empo2.episode import Episode, Step
from empo2.training_rows import segments

TIPS = ["the apple is in the kitchen", "do not focus on the cup"]


def make_episode(tokenizer, mode: str) -> Episode:
    """Two steps; the prompt of each step carried tips (as a memory-mode rollout would)."""
    conv = Conversation(instruction="One action.")
    conv.add_user("Task: find the apple. You are in the hallway.", tips=TIPS)
    ep = Episode(uid="0-0-0", instance="find/0", group="g", mode=mode, conversation=conv)
    for action, obs in [("go to kitchen", "You are in the kitchen."), ("focus on apple", "Done.")]:
        rendered = conv.render(tokenizer, 4096)
        ep.steps.append(Step(prompt_ids=rendered.ids, response_ids=tokenizer(action)["input_ids"],
                             engine_logprobs=[-1.0] * 3, response_text=action, action=action, observation=obs,
                             reward=0.0, tips=list(TIPS), n_messages=len(conv.messages), retrieved=2))
        conv.add_assistant(action)
        conv.add_user(obs, tips=TIPS)
    ep.advantage = 0.5
    return ep


def tipfree_ids(tokenizer, n_steps: int) -> list[int]:
    """The same conversation built from scratch without any tips."""
    conv = Conversation(instruction="One action.")
    conv.add_user("Task: find the apple. You are in the hallway.")
    for action, obs in [("go to kitchen", "You are in the kitchen.")][: n_steps - 1]:
        conv.add_assistant(action)
        conv.add_user(obs)
    return conv.render(tokenizer, 4096).ids


def datamodule(*overrides: str) -> RolloutDataModule:
    return RolloutDataModule(load_config(None, list(overrides)))


def test_off_policy_trains_the_tip_free_prompt_exactly(tokenizer):
    dm = datamodule()
    rows = dm.build_rows([make_episode(tokenizer, "off_policy")], tokenizer)
    for i, row in enumerate(rows):
        assert row.train_prompt == tipfree_ids(tokenizer, i + 1)
        assert row.train_prompt != row.rollout_prompt  # the rollout prompt had tips
        assert row.old_prompt == row.train_prompt  # default: old log-probs without tips
        assert row.response_ids == make_episode(tokenizer, "off_policy").steps[i].response_ids
        assert row.masked and row.advantage == 0.5


def test_old_logprob_with_tips_option(tokenizer):
    rows = datamodule("offpolicy.old_logprob=with_tips").build_rows([make_episode(tokenizer, "off_policy")], tokenizer)
    assert all(r.old_prompt == r.rollout_prompt and r.train_prompt != r.rollout_prompt for r in rows)


@pytest.mark.parametrize("mode", ["on_policy", "on_policy_memory"])
def test_on_policy_modes_train_the_rollout_prompt(tokenizer, mode):
    rows = datamodule().build_rows([make_episode(tokenizer, mode)], tokenizer)
    for row in rows:
        assert row.train_prompt == row.rollout_prompt and row.old_prompt == row.rollout_prompt and row.old_on_rollout_prompt
        assert not row.masked  # default: masking applies to off-policy rows only


class PromptAwarePolicy:
    """Stands in for the trainer's forward pass with fixed, hand-chosen log-probs: one set for
    prompts that show tips, another for tip-free prompts (what the selection logic is tested on)."""

    def __init__(self, tokenizer):
        self.marker = tokenizer("<tip>", add_special_tokens=False)["input_ids"]

    def _has_tips(self, prompt):
        m = self.marker
        return any(prompt[i:i + len(m)] == m for i in range(len(prompt)))

    def compute_logprobs(self, prompts, responses, temperature):
        out = []
        for p, r in zip(prompts, responses):
            base = [-1.0, -2.0, -3.0] if self._has_tips(p) else [-0.5, -6.0, -4.0]
            out.append((base * 4)[: len(r)])
        return out

    def segment_logprobs(self, mini_batches, temperature, reference=False):
        """Each row on its train prompt, as the trainer's update-shaped pass gives them."""
        return {id(seg): self.compute_logprobs([r.train_prompt for r in seg.rows], [r.response_ids for r in seg.rows],
                                               temperature) for mb in mini_batches for seg in mb}


def _rows(tokenizer, mode, *overrides):
    dm = datamodule(*overrides)
    rows = dm.build_rows([make_episode(tokenizer, mode)], tokenizer)
    dm.add_old_logprobs(rows, PromptAwarePolicy(tokenizer), [segments(rows, shared=True)])
    return rows


def test_mask_token_level_and_old_logprob_choices(tokenizer):
    # log δ = −5: tip-free log-probs [−0.5, −6, −4] -> keep [1, 0, 1]
    for row in _rows(tokenizer, "off_policy"):
        n = len(row.response_ids)
        assert row.old_logprobs == [-0.5, -6.0, -4.0][:n]
        assert row.keep == [1.0, 0.0, 1.0][:n]
        # the engine/trainer gap is still measured on the prompt the engine sampled with (tips)
        assert row.rollout_prompt_logprobs == [-1.0, -2.0, -3.0][:n]
    for row in _rows(tokenizer, "off_policy", "offpolicy.old_logprob=with_tips"):
        n = len(row.response_ids)
        assert row.old_logprobs == [-1.0, -2.0, -3.0][:n]  # π_old(a | s, tips)
        assert row.keep == [1.0, 0.0, 1.0][:n]  # the mask still uses the tip-free policy


def test_mask_step_level_threshold_and_off_switch(tokenizer):
    for row in _rows(tokenizer, "off_policy", "mask.level=step"):
        assert row.keep == [0.0] * len(row.response_ids)  # one token below δ masks the step
    for row in _rows(tokenizer, "off_policy", "mask.log_delta=-7"):
        assert row.keep == [1.0] * len(row.response_ids)
    for row in _rows(tokenizer, "off_policy", "mask.level=none"):
        assert row.keep == [1.0] * len(row.response_ids)


def test_mask_apply_to_all(tokenizer):
    for row in _rows(tokenizer, "on_policy_memory", "mask.apply_to=all"):
        n = len(row.response_ids)
        assert row.old_logprobs == [-1.0, -2.0, -3.0][:n]  # on-policy: the prompt it was sampled with
        assert row.keep == [1.0, 0.0, 1.0][:n]  # decided by the tip-free policy
    for row in _rows(tokenizer, "on_policy_memory"):
        assert row.keep == [1.0] * len(row.response_ids)


def test_mode_sampler_frequencies():
    dm = datamodule("mode.p=0.25", "mode.q=0.6666666666666666", "seed=3")
    counts = Counter(dm.sample_modes(1)[0] for _ in range(20000))
    assert counts["on_policy"] / 20000 == pytest.approx(0.75, abs=0.01)
    assert counts["on_policy_memory"] / 20000 == pytest.approx(0.25 / 3, abs=0.01)
    assert counts["off_policy"] / 20000 == pytest.approx(0.5 / 3, abs=0.01)


def test_mode_sampler_granularity_and_grpo():
    assert set(datamodule("mode.p=0").sample_modes(16)) == {"on_policy"}
    per_iteration = [datamodule("mode.p=0.5", f"seed={s}").sample_modes(8) for s in range(20)]
    assert all(len(set(m)) == 1 and len(m) == 8 for m in per_iteration)
    per_group = datamodule("mode.p=0.5", "mode.granularity=group").sample_modes(64)
    assert len(per_group) == 64 and len(set(per_group)) == 3
