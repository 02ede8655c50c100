"""Model-facing helpers shared by the trainers: load a policy, batch sequences, logprobs in micro-batches.

A sequence is prompt ids + response ids. After the causal shift, entry t of the (B, L-1) logprob tensor scores
input_ids[:, t+1]; `response_mask` (B, L-1) marks the entries that score response tokens.
"""

from __future__ import annotations

from typing import Any

import torch

from anemone_rl.algorithms import entropy_from_logits, shifted_token_logprobs


def load_policy(path: str | None, dtype: str = "auto", device: str = "cpu", train: bool = True) -> tuple[Any, Any]:
    """An HF causal LM and its tokenizer through automodel's loaders (local folders only)."""
    from anemone_automodel.model import load_model, load_tokenizer

    model = load_model(path, None if dtype == "auto" else dtype, device)
    model.config.use_cache = False
    model.train(train)
    if not train:
        model.requires_grad_(False)
    return model, load_tokenizer(path)


def build_batch(prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded sequences: input_ids (B, L), attention_mask (B, L), response_mask (B, L-1)."""
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses, strict=True)]
    L = max(lengths)
    B = len(prompts)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    attn = torch.zeros(B, L, dtype=torch.long)
    rmask = torch.zeros(B, L - 1, dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        ids[i, : lengths[i]] = torch.tensor(p + r, dtype=torch.long)
        attn[i, : lengths[i]] = 1
        rmask[i, len(p) - 1 : len(p) - 1 + len(r)] = 1.0  # entries predicting response tokens
    return {"input_ids": ids, "attention_mask": attn, "response_mask": rmask}


def place_response_values(values: list[list[float]], prompts: list[list[int]], width: int) -> torch.Tensor:
    """Per-response-token values (e.g. generator logprobs) laid out like `response_mask`: (B, width)."""
    out = torch.zeros(len(values), width, dtype=torch.float32)
    for i, (v, p) in enumerate(zip(values, prompts, strict=True)):
        out[i, len(p) - 1 : len(p) - 1 + len(v)] = torch.tensor(v, dtype=torch.float32)
    return out


def micro_batches(batch: dict[str, torch.Tensor], size: int):
    """Split every tensor of `batch` into chunks of `size` rows, trimming columns that are padding in every
    row of the chunk. 2-D tensors are (B, L) like input_ids or (B, L-1) like response_mask."""
    n, full = batch["input_ids"].shape
    for start in range(0, n, size):
        rows = slice(start, start + size)
        W = int(batch["attention_mask"][rows].sum(-1).max())
        mb = {}
        for k, v in batch.items():
            v = v[rows]
            if v.dim() == 2:
                v = v[:, :W] if v.shape[1] == full else v[:, : W - 1]
            mb[k] = v
        yield mb


def split_for_workers(batch: dict[str, torch.Tensor], workers: int, mini_batches: int = 1) -> list[dict[str, torch.Tensor]]:
    """A batch of B rows -> one share per policy worker: worker r gets the r-th 1/workers of every mini-batch
    (so each optimizer step sees every worker), in mini-batch order. B must split into mini_batches x workers."""
    B = batch["input_ids"].shape[0]
    if B % (mini_batches * workers):
        raise ValueError(f"{B} rows do not split into mini_batches {mini_batches} x workers {workers}")
    per_mini, per_worker = B // mini_batches, B // (mini_batches * workers)
    shares = []
    for r in range(workers):
        rows = torch.cat([torch.arange(m * per_mini + r * per_worker, m * per_mini + (r + 1) * per_worker)
                          for m in range(mini_batches)])
        shares.append({k: v[rows] for k, v in batch.items()})
    return shares


def forward_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0,
                     with_entropy: bool = False, response_mask: torch.Tensor | None = None,
                     share_prompts: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token logprobs (B, L-1) of input_ids under the model (and entropies (B, L-1) if asked).

    With `response_mask` (B, L-1), the LM head and the softmax run only from the first column any row scores
    a response token (HF `logits_to_keep`): prompt positions need no logits, and the head over a 49k vocabulary
    is a fifth of a small model's forward. Entries before that column are 0. With `share_prompts` too, rows
    that repeat a prompt run it once (`shared_prompt.py`); then only response entries are filled.
    """
    if share_prompts and response_mask is not None:
        from anemone_rl.shared_prompt import shared_prompt_logprobs

        shared = shared_prompt_logprobs(model, input_ids, attention_mask, response_mask, temperature, with_entropy)
        if shared is not None:
            return shared
    B, L = input_ids.shape
    first = 0
    if response_mask is not None and bool(response_mask.any()):
        first = int(response_mask.any(0).nonzero()[0])  # first scored column of the (B, L-1) layout
    kw = {"logits_to_keep": L - first} if first else {}
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kw).logits  # (B, L-first, V)
    lp = shifted_token_logprobs(logits, input_ids[:, first:], temperature)  # (B, L-1-first)
    ent = None
    if with_entropy:
        with torch.no_grad():
            ent = entropy_from_logits(logits[:, :-1].detach(), temperature)  # (B, L-1-first)
    if first:  # back to the (B, L-1) layout every caller indexes with response_mask
        lp = torch.nn.functional.pad(lp, (first, 0))
        ent = torch.nn.functional.pad(ent, (first, 0)) if ent is not None else None
    return lp, ent


@torch.no_grad()
def batched_logprobs(model: Any, batch: dict[str, torch.Tensor], micro_batch_size: int,
                     temperature: float = 1.0, share_prompts: bool = False) -> torch.Tensor:
    """Logprobs (B, L-1) of a whole batch, computed micro-batch by micro-batch without gradients."""
    was = model.training
    model.eval()
    B, L = batch["input_ids"].shape
    out = torch.zeros(B, L - 1)
    for start in range(0, B, micro_batch_size):
        ids = batch["input_ids"][start : start + micro_batch_size]
        attn = batch["attention_mask"][start : start + micro_batch_size]
        W = int(attn.sum(-1).max())
        rmask = batch["response_mask"][start : start + micro_batch_size, : W - 1] if "response_mask" in batch else None
        lp, _ = forward_logprobs(model, ids[:, :W], attn[:, :W], temperature, response_mask=rmask,
                                 share_prompts=share_prompts)
        out[start : start + ids.shape[0], : W - 1] = lp.float()
    model.train(was)
    return out
