"""Batching: pad to the longest example, or pack several documents into one row with per-document attention."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from anemone_automodel.data.chat import IGNORE_INDEX


def pad_collate(examples: Sequence[dict], pad_id: int, pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad `input_ids` with `pad_id` and `labels` with -100 to the longest example (or `pad_to`).

    Returns input_ids (B, T), labels (B, T), attention_mask (B, T) with 1 on real tokens.
    """
    longest = max(len(e["input_ids"]) for e in examples)
    width = max(longest, pad_to or 0)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"], dtype=torch.long)
        labels[i, :n] = torch.tensor(e["labels"], dtype=torch.long)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def pack_groups(lengths: Sequence[int], seq_len: int) -> list[list[int]]:
    """Greedy, order-preserving packing: indices of examples per row, each row holding <= seq_len tokens.

    Examples longer than `seq_len` get a row of their own (and are truncated by `pack_collate`).
    """
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, n in enumerate(lengths):
        n = min(n, seq_len)
        if current and used + n > seq_len:
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        groups.append(current)
    return groups


def pack_collate(rows: Sequence[Sequence[dict]], seq_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Each row is a list of documents concatenated into one sequence of `seq_len` tokens.

    Returns input_ids (B, S), labels (B, S) and position_ids (B, S) restarting at 0 for every document,
    and no attention_mask: transformers then derives a block-diagonal causal mask from the position ids,
    so no token attends across a document boundary. Call the model with `use_cache=False`: with a KV cache
    transformers skips that detection and the documents would see each other. The first token of each document is never a target
    (it would be predicted from the previous document). Padding forms a last pseudo-document with no labels.
    """
    ids = torch.full((len(rows), seq_len), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), seq_len), IGNORE_INDEX, dtype=torch.long)
    pos = torch.zeros((len(rows), seq_len), dtype=torch.long)
    for r, docs in enumerate(rows):
        at = 0
        for d in docs:
            n = min(len(d["input_ids"]), seq_len - at)
            if n <= 0:
                break
            ids[r, at : at + n] = torch.tensor(d["input_ids"][:n], dtype=torch.long)
            labels[r, at : at + n] = torch.tensor(d["labels"][:n], dtype=torch.long)
            labels[r, at] = IGNORE_INDEX
            pos[r, at : at + n] = torch.arange(n)
            at += n
        pos[r, at:] = torch.arange(seq_len - at)
    return {"input_ids": ids, "labels": labels, "position_ids": pos}
