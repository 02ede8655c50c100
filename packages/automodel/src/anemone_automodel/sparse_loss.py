"""The causal-LM loss computed only where a next token is trained: same value and gradients, less work.

With chat data most positions are prompt, and for a small model the LM head plus the softmax over the
vocabulary is a large share of the compute (SmolLM2-135M: 28M of its 134M parameters are the tied head).
Two savings, both exact for a causal model:

1. **Cut the tail.** Position t only influences positions after it, so columns after the last position whose
   next token is trained (in any row) cannot change the loss: the model runs on `input[:, :width]`.
2. **Head rows per row.** Hidden states are gathered at the (row, position) pairs whose next token is trained,
   across the whole batch, and only those N rows go through the LM head and the cross-entropy: logits are
   (1, N, V) instead of (B, T, V). The gather is a forward pre-hook on the model's output embeddings, so the
   model's own forward runs untouched (FSDP2's root hooks, TP, peft wrappers and activation checkpointing
   all still apply); `logits_to_keep` first narrows the hidden states to the union of trained positions.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from anemone_automodel.data.chat import IGNORE_INDEX


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the HF model can compute logits at chosen positions (`logits_to_keep` as an index tensor)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


@contextlib.contextmanager
def head_rows(model: Any, keep: torch.Tensor) -> Iterator[None]:
    """While active, the output embeddings see `hidden[keep]` as (1, N, H) instead of hidden (B, K, H)."""

    def select(_module: torch.nn.Module, args: tuple) -> tuple:
        hidden = args[0]  # (B, K, H)
        return (hidden[keep].unsqueeze(0), *args[1:])  # (1, N, H)

    handle = model.get_output_embeddings().register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()


def sparse_causal_lm_loss(model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
                          device: str | torch.device) -> torch.Tensor:
    """Summed next-token loss of `model` on `inputs` (input_ids and attention_mask/position_ids, (B, T)),
    equal to `causal_lm_loss(model(**inputs).logits, labels, "sum")`, computing the model only up to the last
    trained position and the LM head only on trained (row, position) pairs. Needs `accepts_logits_to_keep`."""
    trained = labels[:, 1:] != IGNORE_INDEX  # (B, T-1): position t predicts token t+1
    cols = trained.any(dim=0).nonzero().squeeze(-1)  # (K,) union over rows
    # Nothing trained: still run the model (FSDP ranks must join the same collectives), on one column.
    width = int(cols[-1]) + 1 if len(cols) else 1
    inputs = {k: v[:, :width].to(device) for k, v in inputs.items()}
    keep = trained[:, cols]  # (B, K)
    targets = labels[:, cols + 1][keep]  # (N,)
    with head_rows(model, keep.to(device)):
        logits = model(**inputs, use_cache=False, logits_to_keep=cols.to(device)).logits  # (1, N, V)
    if logits.shape[:2] != (1, len(targets)):
        raise RuntimeError(f"{type(model).__name__} did not route its hidden states through "
                           f"get_output_embeddings(): logits {tuple(logits.shape)}, expected (1, {len(targets)}, V)")
    return F.cross_entropy(logits[0].float(), targets.to(device), reduction="sum")
