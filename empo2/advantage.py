"""Advantage estimators (EMPO2.md §6.1 and step-level credit), registered by name.

Why per group: GRPO has no critic; an episode is judged against the other N episodes of the same
environment instance. The default is trajectory level (one number per episode, shared by all its
step rows and tokens); `grpo_step` is the older code's variant that normalises over the group's
step rows, so long episodes weigh more in the mean and std.

Why estimators see episodes, not returns: step-level credit (`gigpo`, `hgpo`) compares *steps*
that stood in the same environment state across the episodes of a group, so it needs each step's
reward and state. Every estimator takes the same typed view (`CreditEpisode` per episode,
`CreditSettings`) and returns one advantage per step; the episode-level estimators repeat theirs
over an episode's steps.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np

from empo2.registry import Registry



@dataclass(frozen=True)
class CreditEpisode:
    """What an advantage estimator sees of one episode."""

    group: str
    """GRPO group id (episodes of one instance drawn in one iteration)."""
    episode_return: float
    """R = Σ_t γ^t (r_t + r_int,t) with `algo.gamma` (EMPO2.md §5): what episode-level estimators judge."""
    rewards: tuple[float, ...]
    """Per step: extrinsic + intrinsic reward."""
    states: tuple[str, ...]
    """Per step: the key of the state the step acted in (by default the observation it answered)."""
    actions: tuple[str, ...]
    """Per step: the action sent (HGPO's history keys)."""


@dataclass(frozen=True)
class CreditSettings:
    eps: float = 1e-6
    """Epsilon added to every std in a normalisation."""
    step_gamma: float = 0.95
    """Discount of the step-level returns-to-go (GiGPO, HGPO)."""
    step_weight: float = 1.0
    """GiGPO's ω: weight of the step-level advantage added to the episode-level one."""
    step_norm: str = "std"
    """`std`: (G − mean) / (std + eps) within a step group; `mean`: G − mean (GiGPO then also
    centres the episode-level part without dividing by its std)."""
    history_levels: int = 2
    """HGPO's K: deepest level of shared history."""
    level_alpha: float = 1.0
    """HGPO: level k weighs (k + 2)^α among the levels whose advantage is not 0."""
    episode_level: bool = False
    """HGPO: also average in the episode-level advantage, as one more level (weight 1)."""


# (episodes, settings) -> one advantage per step of each episode
AdvantageFn = Callable[[Sequence[CreditEpisode], CreditSettings], list[list[float]]]
ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")


def _normalise(values: np.ndarray, eps: float) -> np.ndarray:
    if len(values) == 1:
        return values.copy()  # a group of one: A = R
    return (values - values.mean()) / (values.std(ddof=1) + eps)


def grpo_trajectory(returns, groups, lengths, eps=1e-6):
    """EMPO2.md §6.1: A_i = (R_i − mean(R)) / (std(R) + eps), unbiased std over the N episodes."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    out = [0.0] * len(returns)
    for idx in members.values():
        adv = _normalise(np.asarray([returns[i] for i in idx], dtype=np.float64), eps)
        for i, a in zip(idx, adv):
            out[i] = float(a)
    return out


def grpo_step(returns, groups, lengths, eps=1e-6):
    """EMPO2.md §9 `advantage.level: step`: each step row carries its episode's return and the
    mean/std run over all step rows of the group (an episode of k steps counts k times). An episode
    of no steps has no rows: it takes no part in the normalisation (its advantage is 0)."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        if lengths[i] > 0:
            members[g].append(i)
    out = [0.0] * len(returns)
    for idx in members.values():
        rows = np.concatenate([np.full(lengths[i], returns[i], dtype=np.float64) for i in idx])
        if len(rows) == 1:  # one row: A = R, as for a group of one
            out[idx[0]] = float(returns[idx[0]])
            continue
        mean, std = rows.mean(), rows.std(ddof=1)
        for i in idx:
            out[i] = float((returns[i] - mean) / (std + eps))
    return out


def per_step(episodes: Sequence[CreditEpisode], per_episode: Sequence[float]) -> list[list[float]]:
    """Repeat each episode's advantage over its steps (at least one entry per episode)."""
    return [[a] * max(len(ep.rewards), 1) for ep, a in zip(episodes, per_episode)]


@ADVANTAGES.register("grpo")
def grpo_advantages(episodes: Sequence[CreditEpisode], settings: CreditSettings) -> list[list[float]]:
    """`grpo_trajectory` (EMPO2.md §6.1) on the episodes' returns, one value for all their steps."""
    return per_step(episodes, grpo_trajectory(
        [ep.episode_return for ep in episodes], [ep.group for ep in episodes],
        [len(ep.rewards) for ep in episodes], settings.eps))


@ADVANTAGES.register("grpo_step")
def grpo_step_advantages(episodes: Sequence[CreditEpisode], settings: CreditSettings) -> list[list[float]]:
    """`grpo_step` (EMPO2.md §9 `advantage.level: step`), one value for all of an episode's steps."""
    return per_step(episodes, grpo_step(
        [ep.episode_return for ep in episodes], [ep.group for ep in episodes],
        [len(ep.rewards) for ep in episodes], settings.eps))


def add_intrinsic_advantage(extrinsic: Sequence[Sequence[float]], intrinsic: Sequence[Sequence[float]],
                            weight: float) -> list[list[float]]:
    """`intrinsic.combine: advantage`: A(e, t) = A_ext(e, t) + w · A_int(e, t), where the estimator
    ran once on the extrinsic rewards alone and once on the unscaled intrinsic rewards alone, and
    w = `intrinsic.coef` (the two-stream advantage of random network distillation, Burda et al.
    2019).

    Why: under `combine: reward` (EMPO2.md §5) the bonus is added to the rewards before the group
    normalisation, which is scale-free: in a group whose extrinsic returns are all equal (a sparse
    task early on), the normalised advantage is the bonus's alone at full strength, whatever
    `intrinsic.coef` says. Normalising the two streams apart makes w the bonus's real weight."""
    return [[a + weight * b for a, b in zip(ext, bonus)] for ext, bonus in zip(extrinsic, intrinsic)]


def returns_to_go(rewards: Sequence[float], gamma: float) -> list[float]:
    """G_t = r_t + γ·G_{t+1}, G_T = 0: the discounted return from step t on."""
    out = [0.0] * len(rewards)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def normalise_within(values: Sequence[float], keys: Sequence[Hashable], norm: str, eps: float,
                     ddof: int = 1) -> tuple[list[float], list[int]]:
    """Each value against the others with the same key: (G − mean) / (std + eps) (`norm=std`; `ddof=1`
    the unbiased std, `ddof=0` the population std) or G − mean (`norm=mean`). Returns the normalised
    values and each key's group size; a value alone under its key gets 0 (nothing to compare it with)."""
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        members[k].append(i)
    out = [0.0] * len(values)
    sizes = [0] * len(values)
    for idx in members.values():
        for i in idx:
            sizes[i] = len(idx)
        if len(idx) == 1:
            continue
        group = np.asarray([values[i] for i in idx], dtype=np.float64)
        centred = group - group.mean()
        if norm == "std":
            centred = centred / (group.std(ddof=ddof) + eps)
        for i, a in zip(idx, centred):
            out[i] = float(a)
    return out, sizes


def _flat_steps(episodes: Sequence[CreditEpisode], gamma: float) -> tuple[list[tuple[int, int]], list[float]]:
    """(episode, step) of every step in order, and each step's return-to-go."""
    where, returns = [], []
    for e, ep in enumerate(episodes):
        for t, g in enumerate(returns_to_go(ep.rewards, gamma)):
            where.append((e, t))
            returns.append(g)
    return where, returns


def episode_level(episodes: Sequence[CreditEpisode], norm: str, eps: float) -> list[float]:
    """GiGPO's episode-level advantage: `grpo_trajectory` under `norm=std`; under `norm=mean` the
    return minus its group's mean, with no std (as the released GiGPO code does; a group of one
    gets 0)."""
    returns = [ep.episode_return for ep in episodes]
    if norm == "std":
        return grpo_trajectory(returns, [ep.group for ep in episodes], [len(ep.rewards) for ep in episodes], eps)
    centred, _ = normalise_within(returns, [ep.group for ep in episodes], "mean", eps)
    return centred


@ADVANTAGES.register("gigpo")
def gigpo_advantages(episodes: Sequence[CreditEpisode], settings: CreditSettings) -> list[list[float]]:
    """GiGPO (Feng et al., 2025): the episode-level GRPO advantage plus ω times a step-level one,
    A(e, t) = A_episode(e) + ω · A_step(e, t).

    Steps of the same GRPO group that acted in the same state (the same state key: an "anchor
    state") form a step group; a step's step-level advantage is its discounted return-to-go
    (γ = `step_gamma`) normalised within that step group (unbiased std). A state met once in the
    group has nothing to compare with and adds 0. ω = 0 gives `grpo` exactly. Under
    `step_norm=mean` both parts are only centred (`episode_level`)."""
    where, returns = _flat_steps(episodes, settings.step_gamma)
    keys = [(episodes[e].group, episodes[e].states[t]) for e, t in where]
    step_adv, _ = normalise_within(returns, keys, settings.step_norm, settings.eps)
    out = per_step(episodes, episode_level(episodes, settings.step_norm, settings.eps))
    for (e, t), a in zip(where, step_adv):
        out[e][t] += settings.step_weight * a
    return out


def history_key(ep: CreditEpisode, t: int, k: int) -> tuple | None:
    """HGPO's level-k key of step t: its GRPO group and the last k + 1 states s_{t−k} .. s_t (states
    only, no actions); None where the episode has no such history (t < k)."""
    if t < k:
        return None
    return (ep.group, tuple(ep.states[t - k:t + 1]))


def level_weight(k: int, alpha: float) -> float:
    """HGPO's weight of level k: (k + 2)^α (k = 0 is the anchor-state level; the episode level,
    when it takes part, is k = −1: weight 1)."""
    return (k + 2.0) ** alpha


@ADVANTAGES.register("hgpo")
def hgpo_advantages(episodes: Sequence[CreditEpisode], settings: CreditSettings) -> list[list[float]]:
    """HGPO (He et al., ICLR 2026) as its authors released it: step-level credit over a hierarchy
    of step groups, and nothing else.

    Level k (k = 0..K, K = `history_levels`) groups the steps of a GRPO group whose last k + 1
    states are the same (level 0: GiGPO's anchor state; a step at t < k has no level k). Within each
    level's group a step's discounted return-to-go (γ = `step_gamma`) is normalised with the
    population std (or only centred, `step_norm=mean`). The step's advantage is the average of its
    levels' advantages weighted by `level_weight` (k + 2)^α, over the levels whose advantage is not
    exactly 0 (a group of one, or one whose members all returned the same, says nothing); 0 where
    none is. The episode-level GRPO advantage is not added; `episode_level` puts it in as one more
    level of weight 1 (its return normalised within the GRPO group like the other levels)."""
    where, returns = _flat_steps(episodes, settings.step_gamma)
    weighted = [0.0] * len(where)
    weights = [0.0] * len(where)

    def add(advantages: Sequence[float], weight: float) -> None:
        for i, a in enumerate(advantages):
            if a != 0.0:
                weighted[i] += weight * a
                weights[i] += weight

    for k in range(settings.history_levels + 1):
        keys = [history_key(episodes[e], t, k) for e, t in where]
        have = [i for i, key in enumerate(keys) if key is not None]
        adv, _ = normalise_within([returns[i] for i in have], [keys[i] for i in have], settings.step_norm,
                                  settings.eps, ddof=0)
        level = [0.0] * len(where)
        for i, a in zip(have, adv):
            level[i] = a
        add(level, level_weight(k, settings.level_alpha))
    if settings.episode_level:
        by_episode, _ = normalise_within([ep.episode_return for ep in episodes], [ep.group for ep in episodes],
                                         settings.step_norm, settings.eps, ddof=0)
        add([by_episode[e] for e, _ in where], level_weight(-1, settings.level_alpha))
    out = [[0.0] * max(len(ep.rewards), 1) for ep in episodes]
    for (e, t), x, w in zip(where, weighted, weights):
        out[e][t] = x / w if w > 0 else 0.0
    return out
