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
