"""Step-level credit (GiGPO, HGPO) against hand-computed numbers, and through real fits.

The hand example: one GRPO group of four episodes, step returns-to-go with γ_step = 0.5.
  A: states s0 s1 s2, actions a b c, rewards 0 0 1  ->  G = 0.25 0.5 1
  B: states s0 s2,    actions a x,   rewards 0 0    ->  G = 0    0
  C: states s0 s1,    actions a b,   rewards 0 1    ->  G = 0.5  1
  D: states s0 s1,    actions y z,   rewards 0 0    ->  G = 0    0
Anchor-state groups: s0 = {A0, B0, C0, D0}; s1 = {A1, C1, D1}; s2 = {A2, B1} (the same state
reached at different steps); the episode-level part is plain GRPO on the returns 1, 0, 1, 0.
"""

import json
import math

import pytest

from empo2.advantage import (ADVANTAGES, CreditEpisode, CreditSettings, gigpo_advantages, grpo_advantages,
                             hgpo_advantages, returns_to_go)
from empo2.training_rows import TrainingRow

EPS = 1e-9


def ep(states, actions, rewards, group="g"):
    return CreditEpisode(group=group, episode_return=float(sum(rewards)), rewards=tuple(rewards),
                         states=tuple(states), actions=tuple(actions))


EPISODES = [
    ep(["s0", "s1", "s2"], ["a", "b", "c"], [0, 0, 1]),
    ep(["s0", "s2"], ["a", "x"], [0, 0]),
    ep(["s0", "s1"], ["a", "b"], [0, 1]),
    ep(["s0", "s1"], ["y", "z"], [0, 0]),
]
SETTINGS = CreditSettings(eps=EPS, step_gamma=0.5, step_weight=1.0, step_norm="std", history_levels=1, level_alpha=1.0)


def step_part(estimator, episodes=EPISODES, settings=SETTINGS):
    """The estimator's advantage minus the episode-level GRPO one, per step."""
    total, base = estimator(episodes, settings), grpo_advantages(episodes, settings)
    return [[a - b for a, b in zip(t, e)] for t, e in zip(total, base)]


def test_returns_to_go_by_hand():
    assert returns_to_go([0, 0, 1], 0.5) == [0.25, 0.5, 1.0]
    assert returns_to_go([1, 2], 1.0) == [3.0, 2.0]
    assert returns_to_go([], 0.9) == []


def test_gigpo_by_hand():
    s = step_part(gigpo_advantages)
    # s0: G = .25, 0, .5, 0 -> mean .1875; unbiased std sqrt(.171875 / 3)
    std0 = math.sqrt(0.171875 / 3)
    assert [s[0][0], s[1][0], s[2][0], s[3][0]] == pytest.approx([0.0625 / std0, -0.1875 / std0, 0.3125 / std0, -0.1875 / std0])
    # s1: G = .5, 1, 0 -> mean .5, std .5 -> 0, +1, -1
    assert [s[0][1], s[2][1], s[3][1]] == pytest.approx([0.0, 1.0, -1.0])
    # s2 at step 2 of A and step 1 of B: G = 1, 0 -> ±1/sqrt(2)
    assert [s[0][2], s[1][1]] == pytest.approx([1 / math.sqrt(2), -1 / math.sqrt(2)])
    # the episode-level part is GRPO on 1, 0, 1, 0: mean .5, std sqrt(1/3)
    episode = grpo_advantages(EPISODES, SETTINGS)
    assert [e[0] for e in episode] == pytest.approx([0.5 / math.sqrt(1 / 3), -0.5 / math.sqrt(1 / 3)] * 2)


def test_gigpo_mean_normalisation_and_weight():
    # step_norm=mean centres both parts: the episode part is R − mean(R) = ±0.5 (no std), as released
    mean = CreditSettings(eps=EPS, step_gamma=0.5, step_weight=2.0, step_norm="mean")
    a = gigpo_advantages(EPISODES, mean)
    assert [a[0][1], a[2][1], a[3][1]] == pytest.approx([0.5 + 2 * 0.0, 0.5 + 2 * 0.5, -0.5 + 2 * -0.5])
    assert [a[0][2], a[1][1]] == pytest.approx([0.5 + 2 * 0.5, -0.5 + 2 * -0.5])


def test_states_met_once_and_equal_returns_add_nothing():
    once = [ep(["p", "q"], ["a", "b"], [0, 1]), ep(["r", "t"], ["a", "b"], [1, 0])]
    assert step_part(gigpo_advantages, once) == [[0.0, 0.0], [0.0, 0.0]]
    equal = [ep(["p", "q"], ["a", "b"], [0, 1]), ep(["p", "q"], ["c", "d"], [0, 1])]
    assert step_part(gigpo_advantages, equal) == [[0.0, 0.0], [0.0, 0.0]]
    assert hgpo_advantages(equal, SETTINGS) == [[0.0, 0.0], [0.0, 0.0]]  # HGPO: no episode part either
    # different GRPO groups never share a step group, whatever their states
    apart = [ep(["p"], ["a"], [1], group="g1"), ep(["p"], ["a"], [0], group="g2")]
    assert step_part(gigpo_advantages, apart) == [[0.0], [0.0]]


def test_gigpo_with_zero_weight_is_grpo_exactly():
    settings = CreditSettings(eps=1e-6, step_gamma=0.9, step_weight=0.0)
    assert gigpo_advantages(EPISODES, settings) == grpo_advantages(EPISODES, settings)


def test_hgpo_levels_by_hand():
    """The released rule on the four episodes above, K = 1, α = 1: level 0 (the anchor state)
    weighs 2, level 1 (the last two states) 3; population std; no episode-level part."""
    a = hgpo_advantages(EPISODES, SETTINGS)
    # step 0 has no level 1: s0 = {.25, 0, .5, 0}, mean .1875, population std sqrt(.171875 / 4)
    std0 = math.sqrt(0.171875 / 4)
    assert [x[0] for x in a] == pytest.approx([0.0625 / std0, -0.1875 / std0, 0.3125 / std0, -0.1875 / std0], abs=1e-4)
    # s1 = {A1 .5, C1 1, D1 0}: ±.5 / sqrt(1/6). Level 1 keys on states only, so D (other actions,
    # same states s0 s1) stays with A and C there: the same values at weights 2 and 3.
    r = 0.5 / math.sqrt(1 / 6)
    assert [a[2][1], a[3][1]] == pytest.approx([r, -r], abs=1e-4)
    # A1 sits at its groups' mean at both levels: every level is exactly 0 and left out -> 0
    assert a[0][1] == 0.0
    # s2: A2 (s1 s2) and B1 (s0 s2) differ at level 1 (each alone there: 0, left out); level 0: ±1
    assert [a[0][2], a[1][1]] == pytest.approx([1.0, -1.0], abs=1e-4)


# P, Q: states x y; R: states z y. γ_step = 0.5: G = (.5, 1), (0, 0), (.5, 1); returns 1, 0, 1.
TRIO = [ep(["x", "y"], ["a", "b"], [0, 1]), ep(["x", "y"], ["a", "c"], [0, 0]), ep(["z", "y"], ["d", "b"], [0, 1])]


def test_hgpo_weights_zero_levels_and_short_histories_by_hand():
    s = CreditSettings(eps=EPS, step_gamma=0.5, history_levels=1, level_alpha=1.0)
    a = hgpo_advantages(TRIO, s)
    # level 0 at y: {1, 0, 1}, mean 2/3, population std sqrt(2/9) -> P1, R1 = 1/sqrt(2), Q1 = −sqrt(2)
    # level 1: (x, y) = {P1 1, Q1 0} -> ±1; (z, y) = {R1} alone -> 0, left out
    half, root2 = 1 / math.sqrt(2), math.sqrt(2)
    assert a[0][1] == pytest.approx((2 * half + 3 * 1.0) / 5, abs=1e-4)
    assert a[1][1] == pytest.approx((2 * -root2 + 3 * -1.0) / 5, abs=1e-4)
    assert a[2][1] == pytest.approx(half, abs=1e-4)
    # step 0 (t = 0 < 1: level 0 only): x = {.5, 0} -> ±1; z = {R0} alone -> 0
    assert [a[0][0], a[1][0], a[2][0]] == pytest.approx([1.0, -1.0, 0.0], abs=1e-4)
    # α = 2: weights 4 and 9
    a2 = hgpo_advantages(TRIO, CreditSettings(eps=EPS, step_gamma=0.5, history_levels=1, level_alpha=2.0))
    assert a2[0][1] == pytest.approx((4 * half + 9 * 1.0) / 13, abs=1e-4)
    # the episode level switched on: returns 1, 0, 1 normalised like a level (1/sqrt(2), −sqrt(2), 1/sqrt(2)), weight 1
    e = hgpo_advantages(TRIO, CreditSettings(eps=EPS, step_gamma=0.5, history_levels=1, level_alpha=1.0, episode_level=True))
    assert e[0][0] == pytest.approx((2 * 1.0 + half) / 3, abs=1e-4)
    assert e[2][0] == pytest.approx(half, abs=1e-4)  # its level 0 is 0 and left out
    assert e[1][1] == pytest.approx((2 * -root2 + 3 * -1.0 + 1 * -root2) / 6, abs=1e-4)
    # step_norm=mean: levels only centred. y: 1/3, −2/3, 1/3; (x, y): ±.5
    m = hgpo_advantages(TRIO, CreditSettings(eps=EPS, step_gamma=0.5, step_norm="mean", history_levels=1))
    assert [m[0][1], m[1][1], m[2][1]] == pytest.approx([(2 / 3 + 1.5) / 5, (-4 / 3 - 1.5) / 5, 1 / 3], abs=1e-4)
    # K = 0 is the anchor-state level alone: GiGPO's step part with the population std, no episode part
    k0 = hgpo_advantages(TRIO, CreditSettings(eps=EPS, step_gamma=0.5, history_levels=0))
    assert k0[0][1] == pytest.approx(half, abs=1e-4) and k0[2][0] == 0.0


def test_registry_and_episode_level_estimators_keep_their_numbers():
    from empo2.advantage import grpo_step, grpo_trajectory

    assert ADVANTAGES.names() == ["gigpo", "grpo", "grpo_step", "hgpo"]
    returns = [e.episode_return for e in EPISODES]
    groups, lengths = [e.group for e in EPISODES], [len(e.rewards) for e in EPISODES]
    assert [a[0] for a in ADVANTAGES.get("grpo")(EPISODES, SETTINGS)] == grpo_trajectory(returns, groups, lengths, EPS)
    assert [a[0] for a in ADVANTAGES.get("grpo_step")(EPISODES, SETTINGS)] == grpo_step(returns, groups, lengths, EPS)
    assert all(len(set(a)) == 1 for a in ADVANTAGES.get("grpo")(EPISODES, SETTINGS))  # one value per episode


def test_rows_carry_their_step_advantage():
    from empo2.episode import Episode, Step

    episode = Episode(uid="0-0-0", instance="find/0", group="g")
    episode.steps = [Step([1, 2], [3], [0.0], "x", "x", "o", 0.0), Step([1, 2, 3, 4], [5], [0.0], "y", "y", "o", 1.0)]
    episode.advantage, episode.step_advantages = 0.3, [0.3, -0.7]
    assert [episode.advantage_at(t) for t in range(2)] == [0.3, -0.7]
    assert [s["advantage"] for s in episode.to_json()["steps"]] == [0.3, -0.7]
    plain = Episode(uid="0-0-1", instance="find/0", group="g", advantage=0.5)
    plain.steps = episode.steps
    assert [plain.advantage_at(t) for t in range(2)] == [0.5, 0.5]


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["gigpo", "hgpo"])
@pytest.mark.parametrize("memory", [False, True], ids=["grpo", "empo2"])
def test_keyroom_fit_with_step_credit(warm_model, tmp_path, estimator, memory):
    """A KeyRoom fit trains with per-step advantages (with and without the memory modes), and the
    trajectory file holds exactly what the estimator gives for the episodes as they were played."""
    from empo2.config import load_config
    from empo2.fit import fit
    from test_fit import read_metrics

    extra = {"mode.p": 1.0, "mode.q": 0.5, "mode.granularity": "group"} if memory else {"mode.p": 0.0}
    over = {"algo.advantage": estimator, "rollout.group_size": 4, "env.train_instances": "[find/0]",
            "rollout.tasks_per_iteration": 2, "trainer.max_epochs": 1, **extra}
    from conftest import tiny_overrides

    fit(load_config(None, tiny_overrides(warm_model, tmp_path, name="run", **over)))
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 1 and float(rows[0]["train/optimizer_steps"]) >= 1
    episodes = [json.loads(line) for line in (tmp_path / "run" / "trajectories" / "iter_00000.jsonl").open()]
    # The file's per-step advantages are the estimator's on the episodes as played: rebuild its input
    # from the file (state t = the observation step t answered; step 0 answered the reset
    # observation, which may equal a later one: "look around" in the start room) and compare exactly.
    from empo2.envs import KeyRoomEnv

    config = load_config(None, tiny_overrides(warm_model, tmp_path, name="run", **over))
    first = {e["instance"]: KeyRoomEnv(**config.env.options).reset(e["instance"])[0] for e in episodes}
    credit = [CreditEpisode(
        group=e["group"], episode_return=e["return"] + e["intrinsic_return"],
        rewards=tuple(s["reward"] + s["intrinsic"] for s in e["steps"]),
        states=tuple([first[e["instance"]]] + [s["observation"] for s in e["steps"][:-1]]),
        actions=tuple(s["action"] for s in e["steps"])) for e in episodes]
    cfg = config.algo
    settings = CreditSettings(eps=cfg.adv_eps, step_gamma=cfg.step_gamma, step_weight=cfg.step_weight,
                              step_norm=cfg.step_norm, history_levels=cfg.history_levels, level_alpha=cfg.level_alpha,
                              episode_level=cfg.hgpo_episode_level)
    expected = ADVANTAGES.get(estimator)(credit, settings)
    assert [[s["advantage"] for s in e["steps"]] for e in episodes] == [a[:len(e["steps"])] for a, e in zip(expected, episodes)]
    # the logged summaries are those of the file's advantages
    trained = [abs(s["advantage"]) for e in episodes for s in e["steps"] if s["response_tokens"] > 0]
    spreads = [max(a) - min(a) for a in ([s["advantage"] for s in e["steps"]] for e in episodes) if len(a) > 1]
    assert float(rows[0]["rollout/advantage_abs_mean"]) == pytest.approx(sum(trained) / len(trained), rel=1e-6)
    assert float(rows[0]["rollout/step_advantage_spread"]) == pytest.approx(sum(spreads) / len(spreads) if spreads else 0.0, abs=1e-6)


def test_per_step_advantages_reach_the_loss_unchanged(tiny_model):
    """One PPO step through `training_step` on rows with different advantages moves the weights by
    exactly −lr × ∇[−Σ_rows A_row Σ_tokens log π / tokens] (SGD; at the first step the ratio is 1 and
    no clip binds): each row's own advantage, not its episode's, weighs its tokens."""
    import torch

    from empo2.config import load_config
    from empo2.models import build_policy
    from empo2.token_batch import build_batch, response_logprobs

    from conftest import one_sgd_step

    cfg = load_config(None, [f"model.name_or_path={tiny_model}", "model.lora.enabled=false", "optim.grad_clip=0",
                             "optim.micro_batch_size=2", "rollout.max_prompt_tokens=64", "rollout.max_new_tokens=8"])
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(10, 1000, (n,), generator=g).tolist() for n in (6, 11, 4)]
    responses = [torch.randint(10, 1000, (n,), generator=g).tolist() for n in (3, 5, 2)]
    advantages = [1.0, -2.0, 0.5]  # three steps of one episode under step-level credit
    rows = [TrainingRow.on_policy(p, r, a) for p, r, a in zip(prompts, responses, advantages)]

    reference = build_policy(cfg.model, cfg.seed)
    before = {k: v.detach().clone() for k, v in reference.named_parameters()}
    batch = build_batch("padded", prompts, responses, 0)
    logp = response_logprobs(reference, batch)
    tokens = float(batch.response_mask.sum())
    (-(torch.tensor(advantages)[:, None] * logp).sum() / tokens).backward()
    expected = {k: -0.1 * p.grad for k, p in reference.named_parameters()}

    module = one_sgd_step(cfg, rows, lr=0.1)
    moved = {k.removeprefix("policy."): p.detach() - before[k.removeprefix("policy.")] for k, p in module.named_parameters()}
    scale = max(float(v.abs().max()) for v in expected.values())
    gap = max(float((moved[k] - expected[k]).abs().max()) for k in expected)
    assert scale > 1e-4 and gap <= 1e-4 * scale, (gap, scale)
