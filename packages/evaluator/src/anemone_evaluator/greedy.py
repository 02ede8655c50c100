"""Greedy decoding of many prompts at once, every sequence in one flat KV cache (continuous batching).

Why not `model.generate` on padded batches (what lm-evaluation-harness does): a padded batch decodes until
its longest row stops, so with short answers of varied length most row-steps are wasted, and every batch
pays its own prefill pass. Here the tokens of all live sequences sit side by side in one batch-1 KV cache;
a 4-D mask lets each query see only its own sequence's earlier tokens, and positions restart per sequence.
One forward pass carries the next token of every decoding sequence plus the whole prompt of sequences
admitted in that step, so a finished sequence's slot is refilled at once and no token is padding. The LM
head runs only on each sequence's last position. Per token the arithmetic is HF's (argmax of the last
position's logits), so the outputs are `generate`'s up to float rounding in exact near-ties.

The price: attention reads every cached column of every live sequence (masked), so its work grows with
`rows x cached tokens`; `kv_tokens` bounds the cache, which suits evaluation prompts (hundreds of tokens).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

DEAD, SHARED = -1, -2  # owners of cache columns that are not one sequence's: finished, the common prefix


def greedy_decode(model: Any, prompts: list[list[int]], max_new: list[int],
                  should_stop: Callable[[int, list[int]], bool], eos_ids: set[int], max_rows: int = 16,
                  draft_tokens: int = 4, prefill_tokens: int = 1024, kv_tokens: int = 8192) -> list[list[int]]:
    """Greedy continuation tokens per prompt (EOS included when produced).

    A sequence stops at an EOS id, after `max_new[i]` tokens, or when `should_stop(i, tokens)` says so.
    At most `max_rows` sequences decode together; a step admits new prompts up to `prefill_tokens` prompt
    tokens (at least one), and only while the live sequences' prompt + budget fit in `kv_tokens`.
    `draft_tokens` > 0 turns on prompt-lookup drafting (`_lookup`): a sequence whose last tokens occurred
    earlier in its text proposes the tokens that followed; one pass verifies them and keeps those equal to
    the greedy choice, so the output is the same, in fewer passes when the model copies from its prompt.
    The prompts' common leading tokens (a task's template, a chat template's system turn) are computed once.
    """
    import torch
    from transformers import DynamicCache

    dev = next(model.parameters()).device
    body, head = model.base_model, model.get_output_embeddings()
    out: list[list[int]] = [[] for _ in prompts]
    queue = deque(sorted(range(len(prompts)), key=lambda i: -len(prompts[i])))
    cache = DynamicCache(config=model.config)
    owner = torch.empty(0, dtype=torch.long, device=dev)  # (T,): the sequence each cached column is of
    live: dict[int, tuple[int, int]] = {}  # sequence -> (its next input token, that token's position)
    reserved = 0  # cache columns the live sequences may reach
    shared = _common_prefix(prompts)
    pending_prefix = bool(shared)  # its columns are owned by SHARED and seen by every sequence
    prompts = [p[len(shared):] for p in prompts]
    with torch.inference_mode():
        while queue or live:
            q_tok: list[int] = []  # this step's query tokens, their positions and sequences
            q_pos: list[int] = []
            q_seq: list[int] = []
            runs = []  # per sequence: (sequence, its scored query indices, its draft)
            if pending_prefix:
                q_tok, q_pos, q_seq, pending_prefix = list(shared), list(range(len(shared))), [SHARED] * len(shared), False
            for i, (tok, pos) in live.items():
                room = max_new[i] - len(out[i]) - 1
                draft = _lookup(shared + prompts[i] + out[i], min(draft_tokens, room)) if draft_tokens and room > 0 else []
                runs.append((i, range(len(q_tok), len(q_tok) + 1 + len(draft)), draft))
                q_tok += [tok, *draft]
                q_pos += range(pos, pos + 1 + len(draft))
                q_seq += [i] * (1 + len(draft))
            admitted = 0
            while queue and len(live) < max_rows:
                i = queue[0]
                need = len(prompts[i]) + max_new[i]
                if live and (admitted + len(prompts[i]) > prefill_tokens or reserved + need > kv_tokens):
                    break
                queue.popleft()
                runs.append((i, range(len(q_tok) + len(prompts[i]) - 1, len(q_tok) + len(prompts[i])), []))
                q_tok += prompts[i]
                q_pos += range(len(shared), len(shared) + len(prompts[i]))
                q_seq += [i] * len(prompts[i])
                live[i] = (-1, -1)  # set from this step's output
                admitted += len(prompts[i])
                reserved += need
            t0 = owner.numel()
            seq_t = torch.tensor(q_seq, device=dev)  # (Q,)
            owner = torch.cat([owner, seq_t])  # (T,)
            cols = torch.arange(owner.numel(), device=dev)
            q_col = t0 + torch.arange(len(q_tok), device=dev)  # (Q,): the column each query token is written to
            own = (owner[None, :] == seq_t[:, None]) | (owner[None, :] == SHARED)  # (Q, T)
            allow = own & (cols[None, :] <= q_col[:, None])  # (Q, T): its own (and the shared) past only
            hidden = body(input_ids=torch.tensor([q_tok], device=dev), attention_mask=allow[None, None],
                          position_ids=torch.tensor([q_pos], device=dev), past_key_values=cache,
                          use_cache=True).last_hidden_state  # (1, Q, H)
            scored = [k for _, ks, _ in runs for k in ks]
            preds = iter(head(hidden[0, scored]).float().argmax(-1).tolist())  # (S,): greedy token per scored query
            for i, ks, draft in runs:
                guesses = [next(preds) for _ in ks]
                done = False
                for j, tok in enumerate(guesses):  # accept while the greedy token equals the draft's
                    out[i].append(tok)
                    done = tok in eos_ids or len(out[i]) >= max_new[i] or should_stop(i, out[i])
                    if done or j == len(draft) or tok != draft[j]:
                        break
                if done:
                    del live[i]
                    reserved -= len(prompts[i]) + max_new[i]
                    owner[owner == i] = DEAD
                else:  # drafts after the first rejected one were computed for nothing: their columns die
                    owner[t0 + ks[j] + 1: t0 + ks[-1] + 1] = DEAD
                    live[i] = (tok, q_pos[ks[j]] + 1)
            owner = _compact(cache, owner)
    return out


def _common_prefix(prompts: list[list[int]]) -> list[int]:
    """The longest common leading tokens, leaving every prompt at least one token of its own."""
    if len(prompts) < 2:
        return []
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for p in prompts[1:]:
        k = 0
        while k < n and p[k] == first[k]:
            k += 1
        n = k
    return first[:n]


def _lookup(text: list[int], k: int, ngrams: tuple[int, ...] = (3, 2)) -> list[int]:
    """Up to `k` tokens that followed the latest earlier occurrence of the text's last n tokens (n=3, then 2)."""
    for n in ngrams:
        tail = text[-n:]
        for s in range(len(text) - n - 1, -1, -1):
            if text[s: s + n] == tail:
                return text[s + n: s + n + k]
    return []


def _compact(cache: Any, owner: Any) -> Any:
    """Drop the columns of finished sequences: attention reads every column, and the cache would grow forever.
    Batched, 64 columns or more at a time; copying the live columns costs far less than a forward pass."""
    alive = owner != DEAD
    if owner.numel() - int(alive.sum()) < 64:
        return owner
    keep = alive.nonzero()[:, 0]
    for layer in cache.layers:  # DynamicLayer keys/values: (1, kv_heads, T, head_dim)
        layer.keys = layer.keys[:, :, keep]
        layer.values = layer.values[:, :, keep]
    return owner[keep]
