"""Advantage estimators (EMPO2.md §6.1), registered by name.

Why per group: GRPO has no critic; an episode is judged against the other N episodes of the same
environment instance. The default is trajectory level (one number per episode, shared by all its
step rows and tokens); `grpo_step` is the older code's variant that normalises over the group's
step rows, so long episodes weigh more in the mean and std.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import numpy as np

from empo2.registry import Registry

# (episode returns, group id per episode, steps per episode, eps) -> advantage per episode
AdvantageFn = Callable[[Sequence[float], Sequence[str], Sequence[int], float], list[float]]
ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")


def _normalise(values: np.ndarray, eps: float) -> np.ndarray:
    if len(values) == 1:
        return values.copy()  # a group of one: A = R
    return (values - values.mean()) / (values.std(ddof=1) + eps)


@ADVANTAGES.register("grpo")
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


@ADVANTAGES.register("grpo_step")
def grpo_step(returns, groups, lengths, eps=1e-6):
    """EMPO2.md §9 `advantage.level: step`: each step row carries its episode's return and the
    mean/std run over all step rows of the group (an episode of k steps counts k times)."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    out = [0.0] * len(returns)
    for idx in members.values():
        rows = np.concatenate([np.full(max(lengths[i], 1), returns[i], dtype=np.float64) for i in idx])
        if len(rows) == 1:  # one row: A = R, as for a group of one
            out[idx[0]] = float(returns[idx[0]])
            continue
        mean, std = rows.mean(), rows.std(ddof=1)
        for i in idx:
            out[i] = float((returns[i] - mean) / (std + eps))
    return out
