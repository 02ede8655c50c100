"""The causal language-model loss, written once (anemone-rl imports it)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from anemone_automodel.data.chat import IGNORE_INDEX


def causal_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, reduction: Literal["mean", "sum"] = "mean"
) -> torch.Tensor:
    """Next-token cross entropy: position t predicts labels[t + 1]; labels of -100 are ignored.

    `reduction="sum"` returns the summed loss, so a caller accumulating gradients over micro-batches (or
    ranks) can divide by the global count of trained tokens and get the same gradient as one big batch.
    """
    # logits (B, T, V), labels (B, T) -> predict token t+1 from position t
    shift_logits = logits[:, :-1, :].float()  # (B, T-1, V), fp32 for a stable log-softmax under bf16
    shift_labels = labels[:, 1:].to(shift_logits.device)  # (B, T-1)
    loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )
    if reduction == "sum":
        return loss
    if reduction != "mean":
        raise ValueError(f"reduction={reduction!r}: use 'mean' or 'sum'")
    return loss / count_trained_tokens(labels).clamp(min=1)


def count_trained_tokens(labels: torch.Tensor) -> torch.Tensor:
    """How many positions contribute to `causal_lm_loss` (labels after the shift that are not -100)."""
    return (labels[:, 1:] != IGNORE_INDEX).sum()
