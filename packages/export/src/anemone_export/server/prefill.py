"""Prefill for a set of new requests, sharing common prompt prefixes.

Prompts that begin with the same tokens (the choices of one multiple-choice question, few-shot prompts with the
same examples) are grouped; each group's shared prefix runs once, its KV cache is copied to every member, and only
the members' own suffixes run in a second pass. The suffixes are left-padded, so a row's cache may hold padding
between its prefix and its suffix: the attention mask hides it and positions come from the mask, so every score
is what the whole prompt gives alone (up to float rounding, as with padding).

    prefill(step, layout, prompts, all_logits) -> Prefilled(cache, mask (B, W), last (B, V), logits [(len_i, V)])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from anemone_export.kv_model import KVLayout, positions_from_mask

MIN_SHARED = 4  # tokens a group's prefix must have
MIN_SAVED = 0.25  # share only when it saves this fraction of the prompt tokens


@dataclass
class Prefilled:
    cache: list[torch.Tensor]  # 2 x layers of (B, kv_heads, W, head_dim)
    mask: torch.Tensor  # (B, W), zeros where padding
    last: torch.Tensor  # (B, V): logits after each prompt's last token
    logits: list[torch.Tensor] | None  # per prompt (len_i, V) when all_logits, else None
    shared_tokens: int  # prompt tokens not computed thanks to shared prefixes


def left_padded(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> ids (B, W) and mask (B, W), padded on the left so every last token is at column W-1."""
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[b, width - len(s):] = 1
    return ids, mask


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def prefix_groups(prompts: list[list[int]]) -> list[tuple[int, list[int]]]:
    """(shared prefix length, member indices) per group. Prompts sorted by their tokens sit next to those they
    share most with; a neighbour joins the group while the prefix it shares stays >= MIN_SHARED tokens and at
    least half the group's, so two questions that share only a template word stay apart. The prefix is capped
    one token short of the shortest member (each member keeps a suffix to run)."""
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    groups: list[tuple[int, list[int]]] = []
    members, shared = [order[0]], len(prompts[order[0]])
    for i in order[1:]:
        common = min(shared, _common(prompts[members[-1]], prompts[i]))
        if common >= max(MIN_SHARED, shared // 2):
            members.append(i)
            shared = common
        else:
            groups.append((shared, members))
            members, shared = [i], len(prompts[i])
    groups.append((shared, members))
    return [(min(n, min(len(prompts[j]) for j in m) - 1), m) for n, m in groups]


def prefill(step: Callable[..., tuple], layout: KVLayout, prompts: list[list[int]], all_logits: bool) -> Prefilled:
    groups = prefix_groups(prompts)
    saved = sum(n * (len(m) - 1) for n, m in groups)
    if saved < MIN_SAVED * sum(map(len, prompts)) or min(n for n, _ in groups) < 1:
        ids, mask = left_padded(prompts)
        logits, *cache = step(ids, mask, positions_from_mask(mask, ids.shape[1]), *layout.empty(len(prompts)),
                              all_logits=all_logits)  # (B, W or 1, V)
        rows = [logits[b, logits.shape[1] - len(p):] for b, p in enumerate(prompts)] if all_logits else None
        return Prefilled(cache, mask, logits[:, -1], rows, 0)
    # Pass 1: one row per group, its shared prefix.
    heads = [prompts[m[0]][:n] for n, m in groups]
    ids, mask = left_padded(heads)
    logits1, *cache1 = step(ids, mask, positions_from_mask(mask, ids.shape[1]), *layout.empty(len(heads)),
                            all_logits=all_logits)  # (G, W1 or 1, V)
    # Pass 2: every prompt's suffix on a copy of its group's cache.
    group_of = [0] * len(prompts)
    for g, (_, m) in enumerate(groups):
        for j in m:
            group_of[j] = g
    sel = torch.tensor(group_of)
    tails = [p[groups[group_of[b]][0]:] for b, p in enumerate(prompts)]
    ids2, mask2 = left_padded(tails)
    full = torch.cat([mask.index_select(0, sel), mask2], 1)
    logits2, *cache = step(ids2, full, positions_from_mask(full, ids2.shape[1]),
                           *[c.index_select(0, sel) for c in cache1], all_logits=all_logits)  # (B, W2 or 1, V)
    rows = None
    if all_logits:
        w1, w2 = logits1.shape[1], logits2.shape[1]
        rows = [torch.cat([logits1[group_of[b], w1 - len(heads[group_of[b]]):], logits2[b, w2 - len(t):]])
                for b, t in enumerate(tails)]
    return Prefilled(cache, full, logits2[:, -1], rows, saved)
