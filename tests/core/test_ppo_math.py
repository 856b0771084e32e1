"""PPO's pure functions against numbers worked out by hand."""

import math

import pytest
import torch

from core.ppo_math import adaptive_kl_coef, gae, kl_estimate, policy_loss, token_rewards, value_loss, whiten

T = torch.tensor


def test_kl_estimators():
    logp, ref = T([[-1.0, -2.0]]), T([[-1.5, -2.0]])
    assert torch.allclose(kl_estimate(logp, ref, "k1"), T([[0.5, 0.0]]))
    # k3 with d = 0.5: exp(-0.5) - 1 + 0.5 = 0.10653
    assert torch.allclose(kl_estimate(logp, ref, "k3"), T([[math.exp(-0.5) - 0.5, 0.0]]), atol=1e-6)
    with pytest.raises(ValueError):
        kl_estimate(logp, ref, "k2")


def test_token_rewards_put_the_score_on_the_last_real_token():
    mask = T([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    kl = T([[0.5, 1.0, 9.0], [0.0, 0.0, 2.0]])
    r = token_rewards(T([3.0, -1.0]), kl, mask, kl_coef=0.1)
    assert torch.allclose(r, T([[-0.05, -0.1 + 3.0, 0.0], [0.0, 0.0, -0.2 - 1.0]]))


def test_gae_by_hand():
    # one sequence of 3 real tokens then padding; gamma 1, lambda 0.5
    rewards, values, mask = T([[0.0, 0.0, 1.0, 0.0]]), T([[0.5, 0.2, 0.4, 9.0]]), T([[1.0, 1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # deltas: d2 = 1 + 0 - 0.4 = 0.6; d1 = 0 + 0.4 - 0.2 = 0.2; d0 = 0 + 0.2 - 0.5 = -0.3
    # A2 = 0.6; A1 = 0.2 + 0.5 * 0.6 = 0.5; A0 = -0.3 + 0.5 * 0.5 = -0.05
    assert torch.allclose(adv, T([[-0.05, 0.5, 0.6, 0.0]]))
    assert torch.allclose(ret, T([[0.45, 0.7, 1.0, 0.0]]))


def test_whiten_ignores_padding():
    x, mask = T([[1.0, 3.0, 100.0]]), T([[1.0, 1.0, 0.0]])
    w = whiten(x, mask)
    assert torch.allclose(w, T([[-1.0, 1.0, 0.0]]), atol=1e-4)


def test_clipped_policy_loss_by_hand():
    old = T([[0.0, 0.0]])
    logp = T([[math.log(1.5), math.log(0.9)]])          # ratios 1.5 and 0.9
    adv, mask = T([[1.0, -2.0]]), T([[1.0, 1.0]])
    loss, clipped = policy_loss(logp, old, adv, mask, clip=0.2)
    # token 0: max(-1 * 1.5, -1 * 1.2) = -1.2; token 1: max(2 * 0.9, 2 * 0.9) = 1.8 -> mean 0.3
    assert loss.item() == pytest.approx(0.3, abs=1e-6) and clipped.item() == pytest.approx(0.5)


def test_clipped_value_loss_by_hand():
    values, old, ret, mask = T([[1.0, 0.0]]), T([[0.5, 0.0]]), T([[0.0, 1.0]]), T([[1.0, 1.0]])
    # token 0: (1 - 0)^2 = 1; clipped v = 0.7 -> 0.49; max 1. token 1: (0 - 1)^2 = 1 both. 0.5 * mean(1, 1) = 0.5
    assert value_loss(values, old, ret, mask, clip=0.2).item() == pytest.approx(0.5)
    # v jumped onto the return (loss 0), but the clipped value 0.2 is 0.8 away: 0.5 * 0.64 = 0.32
    assert value_loss(T([[1.0]]), T([[0.0]]), T([[1.0]]), T([[1.0]]), clip=0.2).item() == pytest.approx(0.32)


def test_adaptive_kl_coefficient_moves_at_most_20_percent_per_horizon():
    assert adaptive_kl_coef(0.1, kl=12.0, target=6.0, n_steps=10, horizon=10) == pytest.approx(0.12)
    assert adaptive_kl_coef(0.1, kl=3.0, target=6.0, n_steps=5, horizon=10) == pytest.approx(0.09)
