"""DPO losses (Rafailov et al. 2023) and IPO (Azar et al. 2023) on per-sequence logprobs.

Inputs are per-example sequence logprobs of the chosen and rejected responses under the policy and the
frozen reference, each (B,). With policy == reference the sigmoid loss is ln 2 and the IPO loss 1/(4 beta^2).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

DPOLossType = Literal["sigmoid", "ipo"]


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-example DPO loss (B,) and its diagnostics.

    h = (pi_c - pi_r) - (ref_c - ref_r), the policy's log-ratio margin over the reference.
    - sigmoid: -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)  (eps = label_smoothing, cDPO)
    - ipo:     (h - 1 / (2 beta))^2  (IPO expects length-averaged logprobs; the trainer passes those)
    """
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)  # (B,)
    if loss_type == "sigmoid":
        loss = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        loss = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"loss_type={loss_type!r}: choose 'sigmoid' or 'ipo'")
    chosen_reward = beta * (policy_chosen - ref_chosen).detach()  # (B,)
    rejected_reward = beta * (policy_rejected - ref_rejected).detach()  # (B,)
    stats = {
        "chosen_reward": chosen_reward,
        "rejected_reward": rejected_reward,
        "margin": chosen_reward - rejected_reward,
        "accuracy": (chosen_reward > rejected_reward).float(),
    }
    return loss, stats
