"""Token logprobs, entropy and masked reductions: the one place where logits become numbers for losses.

Shapes: B batch, T time (tokens), V vocabulary. Logits are promoted to fp32 before softmax so the trainer and
the generator compute logprobs the same way regardless of the model's dtype.
"""

from __future__ import annotations

from typing import Literal

import torch

Normalization = Literal["token", "sequence"]


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(targets) under softmax(logits / temperature). logits (B, T, V), targets (B, T) -> (B, T)."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked - torch.logsumexp(logits, dim=-1)  # (B, T)


def shifted_token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Causal-LM logprobs of each next token: logits (B, L, V), input_ids (B, L) -> (B, L-1).

    Entry t is log p(input_ids[:, t+1] | input_ids[:, :t+1]).
    """
    return token_logprobs(logits[:, :-1], input_ids[:, 1:], temperature)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) per position: (B, T, V) -> (B, T)."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1)  # (B, T, V)
    return -(logp.exp() * logp).sum(-1)  # (B, T)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x where mask is 1 (over all entries, or along `dim`); 0 where the mask is empty."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp_min(1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)


def sequence_logprobs(token_lp: torch.Tensor, mask: torch.Tensor, average: bool = False) -> torch.Tensor:
    """Sum (or mean) of token logprobs over each sequence's masked tokens: (B, T), (B, T) -> (B,)."""
    if average:
        return masked_mean(token_lp, mask, dim=-1)
    return (token_lp * mask.to(token_lp.dtype)).sum(-1)


def aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    normalization: Normalization = "token",
    num_tokens: float | None = None,
    num_sequences: float | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss (B, T) under `mask` (B, T) to a scalar.

    - "token": sum over all response tokens / number of tokens (every token weighs the same; DAPO, Dr.GRPO).
    - "sequence": mean over sequences of each sequence's token mean (every sequence weighs the same; GRPO paper).

    `num_tokens` / `num_sequences` override the denominators with totals over a whole batch, so that summing
    the losses of micro-batches gives exactly the loss of the full batch (gradient accumulation invariance).
    """
    m = mask.to(per_token.dtype)
    if normalization == "token":
        denom = num_tokens if num_tokens is not None else m.sum().clamp_min(1.0)
        return (per_token * m).sum() / denom
    if normalization == "sequence":
        per_seq = (per_token * m).sum(-1) / m.sum(-1).clamp_min(1.0)  # (B,)
        denom = num_sequences if num_sequences is not None else per_token.shape[0]
        return per_seq.sum() / denom
    raise ValueError(f"normalization={normalization!r}: choose 'token' or 'sequence'")
