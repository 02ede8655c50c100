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


def trained_positions(labels: torch.Tensor) -> torch.Tensor:
    """Sequence positions t (over the whole batch) whose next token t+1 is trained in at least one row.

    Only these positions need logits: with chat data most positions are prompt, and the LM head plus the
    softmax over the vocabulary is a large share of a small model's compute.
    """
    return (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)  # (K,)


def causal_lm_loss_at(logits: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor,
                      reduction: Literal["mean", "sum"] = "sum") -> torch.Tensor:
    """`causal_lm_loss` when `logits` (B, K, V) were computed only at `positions` (K,): the same value."""
    targets = labels[:, positions + 1].to(logits.device)  # (B, K)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    if reduction == "sum":
        return loss
    return loss / (targets != IGNORE_INDEX).sum().clamp(min=1)
