"""Dual-clip PPO (EMPO2.md §6.2) against numbers worked out by hand (ε_low 0.2, ε_high 0.3, c 10)."""

import math

import pytest
import torch

from empo2.loss import LOSSES, dual_clip_ppo


def _terms(ratios, advs, mask=None):
    logp = torch.log(torch.tensor([ratios], dtype=torch.float64))
    old = torch.zeros_like(logp)
    adv = torch.tensor([advs], dtype=torch.float64)
    mask = torch.ones_like(logp) if mask is None else torch.tensor([mask], dtype=torch.float64)
    return dual_clip_ppo(logp, old, adv, mask, clip_low=0.2, clip_high=0.3, dual_clip=10.0)


def test_each_branch_by_hand():
    # token: (ratio, A) -> loss
    # 1.5, +1: max(-1.5, -1.3) = -1.3            (upper clip active)
    # 0.5, +1: max(-0.5, -0.8) = -0.5            (no clip)
    # 1.5, -1: max(1.5, 1.3) = 1.5, min(1.5, 10) (no clip)
    # 0.5, -1: max(0.5, 0.8) = 0.8               (lower clip active)
    # 20,  -1: max(20, 1.3) = 20 -> min(20, 10) = 10 (dual clip active)
    # 1.0, +2: -2
    t = _terms([1.5, 0.5, 1.5, 0.5, 20.0, 1.0], [1, 1, -1, -1, -1, 2])
    assert t.loss_sum.item() == pytest.approx(-1.3 - 0.5 + 1.5 + 0.8 + 10.0 - 2.0)
    assert t.loss_sum.item() / 6 == pytest.approx(8.5 / 6)  # token-mean
    assert t.clipped.item() == 2
    assert t.dual_clipped.item() == 1
    assert t.ratio_sum.item() == pytest.approx(1.5 + 0.5 + 1.5 + 0.5 + 20 + 1.0)
    assert t.ratio_max.item() == pytest.approx(20.0)


def test_masked_tokens_do_not_count():
    t = _terms([1.5, 0.5], [1, 1], mask=[1, 0])
    assert t.loss_sum.item() == pytest.approx(-1.3)
    assert t.clipped.item() == 1
    assert t.ratio_sum.item() == pytest.approx(1.5)


def test_zero_advantage_gives_zero_loss_and_gradient():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    t = dual_clip_ppo(logp, torch.tensor([[-1.5, -1.0]]), torch.zeros(1, 1), torch.ones(1, 2))
    t.loss_sum.backward()
    assert t.loss_sum.item() == 0.0
    assert torch.all(logp.grad == 0)


def test_log_ratio_is_clamped_before_exp():
    logp = torch.tensor([[30.0]], dtype=torch.float64)
    t = dual_clip_ppo(logp, torch.zeros_like(logp), torch.tensor([[-1.0]], dtype=torch.float64), torch.ones_like(logp))
    assert t.ratio_max.item() == pytest.approx(math.exp(20.0))
    assert t.loss_sum.item() == pytest.approx(10.0)  # dual clip caps it at -c*A


def test_gradient_of_unclipped_token_is_minus_advantage_times_ratio():
    # d/dlogp (-A * exp(logp - old)) = -A * ratio; ratio 1.1 inside [0.8, 1.3]
    logp = torch.tensor([[math.log(1.1)]], dtype=torch.float64, requires_grad=True)
    t = dual_clip_ppo(logp, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([[2.0]], dtype=torch.float64),
                      torch.ones(1, 1, dtype=torch.float64))
    t.loss_sum.backward()
    assert logp.grad.item() == pytest.approx(-2.0 * 1.1)


def test_registry_knows_the_loss():
    assert LOSSES.get("dual_clip_ppo") is dual_clip_ppo
    with pytest.raises(KeyError, match="registered: dual_clip_ppo"):
        LOSSES.get("nope")


def test_kl_estimators_by_hand():
    from empo2.loss import KL_ESTIMATORS

    logp = torch.tensor([-1.0, -2.0, -1.0, -30.0])
    ref = torch.tensor([-2.0, -1.0, -1.0, -1.0])
    # d = ref − logp = −1, 1, 0, 29
    assert torch.allclose(KL_ESTIMATORS.get("k1")(logp, ref), torch.tensor([1.0, -1.0, 0.0, -29.0]))
    assert torch.allclose(KL_ESTIMATORS.get("k2")(logp, ref), torch.tensor([0.5, 0.5, 0.0, 420.5]))
    # k3 = e^d − d − 1: e^−1 = 0.367879, e − 2 = 0.718282, 0, and e^20 − 21 clamped to 10
    k3 = KL_ESTIMATORS.get("low_var_kl")(logp, ref)
    assert torch.allclose(k3, torch.tensor([0.367879, 0.718282, 0.0, 10.0]), atol=1e-6)


def test_token_mean_scale_by_hand():
    from empo2.loss import token_mean_scale

    # Two micro-batches with loss sums 3 and 5 over 2 + 6 counted tokens: the token mean is 8 / 8 = 1.
    scale = token_mean_scale(8)
    assert 3 * scale + 5 * scale == 1.0 and scale == 0.125
    assert token_mean_scale(8, ranks_averaged=2) == 0.25  # FSDP over 2 ranks averages: twice the share
    assert token_mean_scale(0) == 1.0  # no counted token: nothing is divided by zero
