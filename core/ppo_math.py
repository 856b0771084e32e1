"""The pieces of PPO for language models, as pure tensor functions (each tested against hand-computed numbers).

Shapes: (batch, T) over response tokens; `mask` is 1 on real response tokens, 0 on padding after EOS.
References: InstructGPT (Ouyang et al. 2022); "The N implementation details of RLHF with PPO"
(Huang et al. 2023).
"""

from __future__ import annotations

import torch


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from tokens sampled by the policy.
    k1 = log p - log q (unbiased, can be negative per token); k3 = (r - 1) - log r with r = q / p
    (unbiased and always >= 0, lower variance)."""
    d = logp - ref_logp
    if kind == "k1":
        return d
    if kind == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"kl kind must be k1 or k3, got {kind!r}")


def token_rewards(score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """r_t = -kl_coef * kl_t on every response token, plus the sequence's score on its last real token."""
    rewards = -kl_coef * kl * mask
    last = mask.sum(1).long().clamp(min=1) - 1
    rewards[torch.arange(len(score), device=rewards.device), last] += score
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation. Returns (advantages, returns = advantages + values); the value
    after the last real token is 0 (the episode ends there)."""
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running * (mask[:, t + 1] if t + 1 < T else 0.0)
        adv[:, t] = running * mask[:, t]
    return adv, (adv + values) * mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the real tokens of the whole batch; padding stays 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate: mean of max(-A r, -A clip(r, 1-e, 1+e)); also returns the clipped share."""
    ratio = torch.exp(logp - old_logp)
    loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip))
    clipped = ((ratio - 1).abs() > clip).float()
    return masked_mean(loss, mask), masked_mean(clipped, mask)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float = 0.2) -> torch.Tensor:
    """Clipped value loss: 0.5 * mean of max((v - R)^2, (v_old + clip(v - v_old, -e, e) - R)^2)."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


def adaptive_kl_coef(coef: float, kl: float, target: float, n_steps: int, horizon: int) -> float:
    """Ziegler et al. (2019): move the coefficient toward keeping KL at `target`, at most 20 % per horizon."""
    error = max(-0.2, min(0.2, kl / target - 1.0))
    return coef * (1.0 + error * n_steps / horizon)
