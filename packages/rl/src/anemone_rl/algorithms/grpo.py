"""GRPO numerics: group-normalized advantages, the clipped policy-gradient loss and the k3 KL estimator.

Layout: a batch of P prompts with G generations each is flattened prompt-major, so rewards (P*G,) reshape
to (P, G) and responses are (P*G, T) with a response mask (P*G, T).
"""

from __future__ import annotations

import torch

from anemone_rl.algorithms.logprobs import Normalization, aggregate, masked_mean


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    leave_one_out: bool = False,
    scale_by_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Advantages (P*G,) from rewards (P*G,): reward minus the group baseline, optionally over the group std.

    The baseline is the group mean, or with `leave_one_out` the mean of the *other* G-1 rewards (RLOO), which
    makes each sample's baseline independent of its own reward. A group whose rewards are all equal gets
    advantage 0 everywhere (no learning signal: see `equal_reward_groups`).
    """
    if group_size < 2:
        raise ValueError(f"group_size={group_size}: GRPO needs at least 2 generations per prompt")
    r = rewards.float().view(-1, group_size)  # (P, G)
    if leave_one_out:
        baseline = (r.sum(-1, keepdim=True) - r) / (group_size - 1)  # (P, G)
    else:
        baseline = r.mean(-1, keepdim=True)  # (P, 1)
    adv = r - baseline  # (P, G)
    if scale_by_std:
        adv = adv / (r.std(-1, keepdim=True) + eps)  # unbiased std over the group
    # Rounding in the leave-one-out baseline leaves ~1e-8 in equal groups, which the std division would
    # blow up to ~0.1: force those groups to exactly zero.
    equal = equal_reward_groups(rewards, group_size).unsqueeze(-1)  # (P, 1)
    adv = adv.masked_fill(equal, 0.0)
    return adv.reshape(-1)


def equal_reward_groups(rewards: torch.Tensor, group_size: int, tol: float = 1e-6) -> torch.Tensor:
    """Boolean (P,) marking groups whose rewards are all equal (zero advantage, zero policy gradient)."""
    r = rewards.float().view(-1, group_size)  # (P, G)
    return (r.max(-1).values - r.min(-1).values) <= tol


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(policy || reference) (Schulman 2020): exp(d) - d - 1 with d = ref - logp.

    (B, T), (B, T) -> (B, T). Non-negative, unbiased, exactly 0 where the two logprobs are equal.
    """
    d = ref_logprobs - logprobs  # (B, T)
    return torch.exp(d) - d - 1.0


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    normalization: Normalization = "token",
    ref_logprobs: torch.Tensor | None = None,
    kl_beta: float = 0.0,
    num_tokens: float | None = None,
    num_sequences: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO/GRPO surrogate with asymmetric clipping (DAPO "clip-higher") plus beta * k3 KL to the reference.

    logprobs, old_logprobs, mask, ref_logprobs: (B, T); advantages: (B,) (one per sequence).
    Per token: -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) with r = exp(logp - logp_old), then
    `aggregate` with the chosen normalization. Returns the scalar loss and detached diagnostics.
    """
    ratio = torch.exp(logprobs - old_logprobs)  # (B, T)
    adv = advantages.to(logprobs.dtype).unsqueeze(-1)  # (B, 1)
    unclipped = ratio * adv  # (B, T)
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv  # (B, T)
    per_token = -torch.minimum(unclipped, clipped)  # (B, T)
    pg_loss = aggregate(per_token, mask, normalization, num_tokens, num_sequences)
    loss = pg_loss
    stats: dict[str, torch.Tensor] = {
        "pg_loss": pg_loss.detach(),
        # The clip is active where the clipped term is the smaller one (gradient is zero there).
        "clip_fraction": masked_mean((clipped < unclipped).float(), mask).detach(),
        "ratio_mean": masked_mean(ratio.detach(), mask),
    }
    if ref_logprobs is not None:
        kl = k3_kl(logprobs, ref_logprobs)  # (B, T)
        kl_loss = aggregate(kl, mask, normalization, num_tokens, num_sequences)
        if kl_beta:
            loss = loss + kl_beta * kl_loss
        stats["kl"] = masked_mean(kl.detach(), mask)
    return loss, stats
