"""Trajectory- and step-level GRPO advantages (EMPO2.md §6.1) against hand-computed numbers."""

import math

import pytest

from empo2.advantage import ADVANTAGES, grpo_step, grpo_trajectory


def test_trajectory_level_by_hand():
    # returns 1,2,3,4: mean 2.5, unbiased std sqrt(5/3) = 1.2909944
    adv = grpo_trajectory([1, 2, 3, 4], ["g"] * 4, [1, 1, 1, 1], 1e-6)
    std = math.sqrt(5 / 3)
    assert adv == pytest.approx([(r - 2.5) / (std + 1e-6) for r in (1, 2, 3, 4)])
    assert adv[0] == pytest.approx(-1.161895, abs=1e-6)


def test_equal_returns_give_zero_advantage():
    assert grpo_trajectory([5, 5, 5], ["g"] * 3, [2, 3, 4], 1e-6) == [0.0, 0.0, 0.0]


def test_group_of_one_keeps_its_return():
    assert grpo_trajectory([7.0], ["g"], [3], 1e-6) == [7.0]


def test_groups_are_normalised_separately():
    adv = grpo_trajectory([0, 100, 10, 10], ["a", "b", "a", "b"], [1, 1, 1, 1], 1e-6)
    # group a: 0,10 -> mean 5, std sqrt(50)=7.0711 -> -0.70711, +0.70711; group b: 100,10 -> +0.70711, -0.70711
    assert adv == pytest.approx([-0.707106, 0.707106, 0.707106, -0.707106], abs=1e-5)


def test_step_level_weights_by_episode_length():
    # rows: [0] + [10, 10, 10] -> mean 7.5, unbiased std sqrt((56.25 + 3*6.25)/3) = 5
    adv = grpo_step([0, 10], ["g", "g"], [1, 3], 1e-6)
    assert adv == pytest.approx([-7.5 / 5, 2.5 / 5], rel=1e-5)


def test_step_level_single_row_keeps_its_return():
    assert grpo_step([3.0], ["g"], [1], 1e-6) == [3.0]


def test_step_level_episode_without_steps_takes_no_part():
    # rows: [1, 1] + [5] (the middle episode has none) -> mean 7/3, unbiased std sqrt(96/18) = 2.309401
    adv = grpo_step([1.0, 3.0, 5.0], ["g", "g", "g"], [2, 0, 1], 1e-6)
    assert adv == pytest.approx([(1 - 7 / 3) / 2.309401, 0.0, (5 - 7 / 3) / 2.309401], rel=1e-5)
    assert grpo_step([4.0, 9.0], ["g", "g"], [0, 1], 1e-6) == [0.0, 9.0]  # one row left: A = R


def test_registry():
    assert ADVANTAGES.names() == ["gigpo", "grpo", "grpo_step", "hgpo"]


def test_discounted_return_by_hand():
    from empo2.episode import Episode, Step

    def step(reward, intrinsic=0.0):
        return Step([], [], [], "", "", "", reward, intrinsic=intrinsic)

    ep = Episode(uid="0", instance="i", group="g", steps=[step(0.0, 0.5), step(-0.1), step(10.0)])
    # γ = 0.95: 0.5 + 0.95·(−0.1) + 0.9025·10 = 0.5 − 0.095 + 9.025 = 9.43
    assert ep.discounted_return(0.95) == pytest.approx(9.43)
    assert ep.discounted_return(1.0) == ep.total_return == pytest.approx(10.4)


# ---------------------------------------------------------------- intrinsic.combine

def _episodes(rewards_and_bonuses: list[tuple[float, list[float]]]):
    """One group of episodes; each: (final extrinsic reward, per-step intrinsic bonuses)."""
    from empo2.episode import Episode, Step

    out = []
    for i, (reward, bonuses) in enumerate(rewards_and_bonuses):
        steps = [Step([], [], [], "", f"a{t}", f"o{t}", reward if t == len(bonuses) - 1 else 0.0, intrinsic=b)
                 for t, b in enumerate(bonuses)]
        out.append(Episode(uid=str(i), instance="i", group="g", steps=steps, observations=[""] * len(steps)))
    return out


def _assign(combine: str, coef: float, eps) -> list[float]:
    from datamodules import RolloutDataModule
    from empo2.config import load_config

    dm = RolloutDataModule(load_config(None, [f"intrinsic.combine={combine}", f"intrinsic.coef={coef}"]))
    dm.assign_advantages(eps)
    return [ep.advantage for ep in eps]


def test_add_intrinsic_advantage_by_hand():
    from empo2.advantage import add_intrinsic_advantage

    out = add_intrinsic_advantage([[1.0, 1.0], [-1.0]], [[0.5, 0.5], [2.0]], 0.1)
    assert [len(a) for a in out] == [2, 1]
    assert [x for a in out for x in a] == pytest.approx([1.05, 1.05, -0.8])


def test_bonus_in_the_reward_is_scale_free_when_extrinsic_returns_tie():
    # No success in the group: the bonus alone ranks the episodes, at full strength whatever coef is.
    # Intrinsic returns (coef 1) 1, 2, 3, 4 -> A = (R - 2.5) / sqrt(5/3) as in test_trajectory_level_by_hand.
    full = [(r - 2.5) / (math.sqrt(5 / 3) + 1e-6) for r in (1, 2, 3, 4)]
    for coef in (1.0, 0.01):
        bonuses = [[coef] * k for k in (1, 2, 3, 4)]
        assert _assign("reward", coef, _episodes([(0.0, b) for b in bonuses])) == pytest.approx(full, rel=1e-4)


def test_bonus_as_advantage_weighs_coef_when_extrinsic_returns_tie():
    bonuses = [[0.1] * k for k in (1, 2, 3, 4)]  # coef 0.1: unscaled intrinsic returns 1, 2, 3, 4
    full = [(r - 2.5) / (math.sqrt(5 / 3) + 1e-6) for r in (1, 2, 3, 4)]
    assert _assign("advantage", 0.1, _episodes([(0.0, b) for b in bonuses])) == pytest.approx([0.1 * a for a in full], rel=1e-6)


def test_bonus_as_advantage_in_a_mixed_group_by_hand():
    # Extrinsic 100, 0, 0, 0 (one success in one step); unscaled bonuses 1, 3, 2, 2.
    # A_ext: mean 25, std sqrt((75² + 3·25²)/3) = 50 -> 1.5, -0.5, -0.5, -0.5.
    # A_int: mean 2, std sqrt((1 + 1 + 0 + 0)/3) = 0.816497 -> -1.224745, 1.224745, 0, 0.
    # coef 0.5: A = 1.5 - 0.612372, -0.5 + 0.612372, -0.5, -0.5.
    eps = _episodes([(100.0, [0.5]), (0.0, [0.5, 0.5, 0.5]), (0.0, [0.5, 0.5]), (0.0, [0.5, 0.5])])
    assert _assign("advantage", 0.5, eps) == pytest.approx([0.887628, 0.112372, -0.5, -0.5], abs=1e-5)
    # The same group with the bonus in the reward: returns 100.5, 1.5, 1, 1 -> the success still leads.
    r = [100.5, 1.5, 1.0, 1.0]
    mean = sum(r) / 4
    std = math.sqrt(sum((x - mean) ** 2 for x in r) / 3)
    assert _assign("reward", 0.5, _episodes([(100.0, [0.5]), (0.0, [0.5, 0.5, 0.5]), (0.0, [0.5, 0.5]), (0.0, [0.5, 0.5])])) \
        == pytest.approx([(x - mean) / (std + 1e-6) for x in r], rel=1e-6)
