"""Token logprobs of prompt + response rows with each distinct prompt run once (GRPO's groups).

GRPO scores G responses to the same prompt; the plain forward runs the prompt G times, and with short
responses (arithmetic answers: 8 tokens after a ~45-token chat prompt) the prompts are most of the tokens. Here
a micro-batch's distinct prompts run once, left-padded, into a KV cache; the cache rows are gathered to every
row of the prompt (an index, so gradients from all G responses flow back into the one prompt forward) and the
responses run on top of it. Same positions, same masks, same arithmetic per token as the plain forward: the
logprobs and gradients agree to float rounding (tests: 1e-5).

Input layout as `policy.build_batch`: right-padded rows prompt + response, `response_mask` (B, L-1) marking the
entries that score response tokens (entry t scores input_ids[:, t+1]).
"""

from __future__ import annotations

from typing import Any

import torch

from anemone_rl.algorithms import entropy_from_logits, token_logprobs
from anemone_rl.generation.decoders import left_pad


def prompt_lengths(response_mask: torch.Tensor) -> torch.Tensor | None:
    """Each row's prompt length (B,) from where its response starts, or None if a row has no response token."""
    scored = response_mask.bool()
    if not bool(scored.any(-1).all()):
        return None
    return scored.float().argmax(-1) + 1  # first scored entry t scores token t + 1: the first response token


def distinct_prompts(input_ids: torch.Tensor, plen: torch.Tensor) -> tuple[list[list[int]], torch.Tensor]:
    """The distinct prompts (in first-seen order) and, per row, the index of its prompt (B,)."""
    seen: dict[tuple[int, ...], int] = {}
    index = []
    for row, n in zip(input_ids.tolist(), plen.tolist(), strict=True):
        index.append(seen.setdefault(tuple(row[:n]), len(seen)))
    return [list(p) for p in seen], torch.tensor(index, device=input_ids.device)


def shared_prompt_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           response_mask: torch.Tensor, temperature: float = 1.0, with_entropy: bool = False,
                           ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Response token logprobs (B, L-1) in the `response_mask` layout (0 elsewhere), and entropies if asked;
    None when sharing cannot help (every prompt distinct) or does not apply (a row without response tokens; a
    model with sliding-window attention, whose cache keeps only a window)."""
    from transformers import DynamicCache

    cfg = model.config
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return None
    plen = prompt_lengths(response_mask)
    if plen is None:
        return None
    prompts, which = distinct_prompts(input_ids, plen)
    if len(prompts) == len(plen):
        return None
    B, L = input_ids.shape
    dev = input_ids.device
    rlen = attention_mask.sum(-1) - plen  # (B,) response tokens per row
    R = int(rlen.max())

    # 1. each distinct prompt once, left-padded: its KV cache and the logits that score the first response token
    p_ids, p_valid = left_pad(prompts, 0, dev)  # (U, P)
    p_mask = p_valid.long()
    p_pos = (p_mask.cumsum(-1) - 1).clamp_min(0)  # (U, P)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=p_ids, attention_mask=p_mask, position_ids=p_pos, past_key_values=cache,
                use_cache=True, logits_to_keep=1)
    first_logits = out.logits[:, -1]  # (U, V)

    # 2. every row's cache: its prompt's rows, gathered (differentiable); then the responses on top
    rows = DynamicCache(config=model.config)
    for i, layer in enumerate(out.past_key_values.layers):
        rows.update(layer.keys.index_select(0, which), layer.values.index_select(0, which), i)
    r_ids = torch.zeros(B, R, dtype=torch.long, device=dev)
    r_mask = torch.zeros(B, R, dtype=torch.long, device=dev)
    for b, (s, n) in enumerate(zip(plen.tolist(), rlen.tolist(), strict=True)):
        r_ids[b, :n] = input_ids[b, s : s + n]
        r_mask[b, :n] = 1
    r_pos = plen[:, None] + torch.arange(R, device=dev)[None]  # (B, R): positions continue each prompt
    logits = model(input_ids=r_ids, attention_mask=torch.cat([p_mask[which], r_mask], dim=1), position_ids=r_pos,
                   past_key_values=rows, use_cache=True).logits  # (B, R, V)

    # 3. logits scoring response token t: the prompt's last position for t = 0, response position t-1 after
    scoring = torch.cat([first_logits[which][:, None], logits[:, :-1]], dim=1)  # (B, R, V)
    lp = token_logprobs(scoring, r_ids, temperature)  # (B, R)
    ent = None
    if with_entropy:
        with torch.no_grad():
            ent = entropy_from_logits(scoring.detach(), temperature)  # (B, R)

    # 4. back to the (B, L-1) layout: response token t of row b sits at column plen[b] - 1 + t
    cols = (plen[:, None] - 1 + torch.arange(R, device=dev)[None]).clamp_max(L - 2)  # (B, R)
    keep = r_mask.to(lp.dtype)
    full = torch.zeros(B, L - 1, dtype=lp.dtype, device=dev).scatter_add(1, cols, lp * keep)
    if ent is not None:
        ent = torch.zeros(B, L - 1, dtype=ent.dtype, device=dev).scatter_add(1, cols, ent * keep)
    return full, ent
