"""EMPO²'s own rules (empo2/modes.py) against values worked out by hand: no trainer, model or env."""

import json

import pytest

from empo2.modes import (Mode, low_probability_keep, mode_of_draw, novelty_bonus, retrieval_count_bonus, sample_modes,
                         update_prompts)


def test_mode_is_its_value():
    assert Mode.OFF_POLICY == "off_policy" and f"mode/{Mode.ON_POLICY_MEMORY}" == "mode/on_policy_memory"
    assert json.dumps({"mode": Mode.OFF_POLICY}) == '{"mode": "off_policy"}'
    assert [m.uses_memory for m in Mode] == [False, True, True]


def test_mode_of_draw_thresholds():
    # p = 0.5, q = 0.5: off_policy below p·q = 0.25, on_policy_memory in [0.25, 0.5), on_policy from 0.5.
    assert [mode_of_draw(u, 0.5, 0.5) for u in (0.0, 0.2499, 0.25, 0.4999, 0.5, 0.99)] == [
        Mode.OFF_POLICY, Mode.OFF_POLICY, Mode.ON_POLICY_MEMORY, Mode.ON_POLICY_MEMORY, Mode.ON_POLICY, Mode.ON_POLICY]
    assert mode_of_draw(0.0, 0.0, 0.7) is Mode.ON_POLICY  # p = 0: plain GRPO whatever the draw
    assert mode_of_draw(0.99, 1.0, 0.0) is Mode.ON_POLICY_MEMORY  # p = 1, q = 0: always tips, never distilled


def test_sample_modes_draws_once_per_iteration_or_per_group():
    draws = iter([0.1, 0.3, 0.7])
    assert sample_modes(lambda: next(draws), 0.5, 0.5, "iteration", 3) == [Mode.OFF_POLICY] * 3
    assert next(draws) == 0.3  # one draw for the whole iteration
    draws = iter([0.1, 0.3, 0.7])
    assert sample_modes(lambda: next(draws), 0.5, 0.5, "group", 3) == [
        Mode.OFF_POLICY, Mode.ON_POLICY_MEMORY, Mode.ON_POLICY]


ROLLOUT, TIPFREE = [1, 2, 9, 9, 3], [1, 2, 3]  # the rollout prompt holds tips (9, 9); the tip-free one does not


@pytest.mark.parametrize("mode", [Mode.ON_POLICY, Mode.ON_POLICY_MEMORY])
def test_update_prompts_on_policy_modes_train_what_was_sampled(mode):
    use = update_prompts(mode, ROLLOUT, TIPFREE, mask_level="token", mask_apply_to="off_policy", old_logprob="without_tips")
    assert (use.train, use.old, use.masked, use.old_is_rollout) == (ROLLOUT, ROLLOUT, False, True)
    everywhere = update_prompts(mode, ROLLOUT, TIPFREE, mask_level="token", mask_apply_to="all", old_logprob="without_tips")
    assert everywhere.masked


def test_update_prompts_off_policy_distils_onto_the_tip_free_prompt():
    use = update_prompts("off_policy", ROLLOUT, TIPFREE, mask_level="token", mask_apply_to="off_policy",
                         old_logprob="without_tips")
    assert (use.train, use.old, use.masked, use.old_is_rollout) == (TIPFREE, TIPFREE, True, False)
    with_tips = update_prompts(Mode.OFF_POLICY, ROLLOUT, TIPFREE, mask_level="none", mask_apply_to="off_policy",
                               old_logprob="with_tips")
    assert (with_tips.train, with_tips.old, with_tips.masked, with_tips.old_is_rollout) == (TIPFREE, ROLLOUT, False, True)
    with pytest.raises(ValueError):
        update_prompts("sideways", ROLLOUT, TIPFREE, mask_level="token", mask_apply_to="all", old_logprob="with_tips")


def test_low_probability_keep_by_hand():
    logps = [-0.1, -5.0, -5.01, -12.0]  # log δ = −5: a token counts when its tip-free log-prob ≥ −5
    assert low_probability_keep(logps, -5.0, "token") == [1.0, 1.0, 0.0, 0.0]
    assert low_probability_keep(logps, -5.0, "step") == [0.0, 0.0, 0.0, 0.0]
    assert low_probability_keep(logps[:2], -5.0, "step") == [1.0, 1.0]
    assert low_probability_keep([], -5.0, "step") == []


def test_intrinsic_bonuses_by_hand():
    assert novelty_bonus(1, 1.0) == 1.0 and novelty_bonus(4, 0.5) == 0.125  # coef / n_t
    with pytest.raises(ValueError, match="at least 1"):
        novelty_bonus(0, 1.0)
    assert retrieval_count_bonus(3, 1.0, uses_memory=True) == 0.25  # coef / (k + 1)
    assert retrieval_count_bonus(0, 2.0, uses_memory=True) == 2.0
    assert retrieval_count_bonus(3, 1.0, uses_memory=False) == 0.0
