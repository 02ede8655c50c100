"""Turn next-token logits into sampled tokens and their logprobs (temperature, top-k, top-p)."""

from __future__ import annotations

import torch


def sample_next(
    logits: torch.Tensor,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, V) -> tokens (B,), logprobs (B,) of those tokens under softmax(logits / temperature)."""
    logits = logits.float()
    if temperature == 0:
        tokens = logits.argmax(-1)  # (B,)
        logp = torch.log_softmax(logits, -1)  # (B, V)
        return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)
    scaled = logits / temperature  # (B, V)
    logp = torch.log_softmax(scaled, -1)  # (B, V): reported logprobs, before truncation
    work = scaled
    if top_k and top_k < work.shape[-1]:
        kth = torch.topk(work, top_k, dim=-1).values[:, -1:]  # (B, 1)
        work = work.masked_fill(work < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(work, dim=-1, descending=True)  # (B, V)
        probs = torch.softmax(sorted_logits, -1)
        # Drop a token when the mass before it already reaches top_p (the top token always stays).
        drop = (probs.cumsum(-1) - probs) >= top_p  # (B, V)
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        work = torch.full_like(work, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(work, -1)  # (B, V)
    tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)
