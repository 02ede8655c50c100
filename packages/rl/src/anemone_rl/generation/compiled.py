"""A decode step compiled with torch.compile (inductor; C++ on CPU, Triton on GPU), behind `compile=True`.

`CompiledDecoder` is `FastDecoder` with a decode step whose shapes never change during a generation: the
key mask spans the whole preallocated cache (slots not yet written are masked), the write position is a
tensor, not a Python int, and rotary cos/sin come from a table built once per generation. So one graph per
batch size serves every step; finished rows are therefore not compacted (a new batch size would compile
again). Prefill stays eager (it runs once per generation, with a prompt-length-dependent shape).

Numerics: the same ops as `FastDecoder`; inductor fuses the elementwise ones (RMSNorm, RoPE, SiLU), which can
reorder float sums, so logprobs agree with the trainer to ~1e-6, not bit for bit (tests bound it by 1e-5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from anemone_rl.generation.decoders import FastDecoder, _rotate_half


class CompiledDecoder(FastDecoder):
    """Llama-family decoding with a torch.compile'd, static-shape decode step."""

    compacts = False  # `keep` works (FastDecoder's), but each new batch size compiles a new graph: the loop skips it
    transpose_on_cpu = False  # the compiled step multiplies by the HF (out, in) layout; inductor picks its own

    def __init__(self, model: torch.nn.Module, mode: str | None = None) -> None:
        super().__init__(model)
        # dynamic=False: one specialised graph per batch size (the cache length is fixed per generation too).
        self._step = torch.compile(_decode_step, dynamic=False, mode=mode)

    def start(self, batch: int, max_len: int) -> None:
        super().start(batch, max_len)
        p = self.embed
        positions = torch.arange(max_len, device=p.device)[None]  # (1, max_len)
        x = torch.zeros(1, 1, p.shape[1], dtype=p.dtype, device=p.device)
        cos, sin = self.model.model.rotary_emb(x, positions)  # (1, max_len, D): the same values as per-step calls
        self.cos_table, self.sin_table = cos[0], sin[0]  # (max_len, D)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """One new token per row, tokens (B,) -> logits (B, V), through the compiled step."""
        t = self.length
        self.key_valid[:, t] = True
        slot = torch.tensor([t], device=tokens.device)  # (1,): a tensor, so every step reuses one graph
        logits = self._step(tokens, self.pos, slot, self.k, self.v, self.key_valid, self.cos_table,
                            self.sin_table, self.layers, self.embed, self.final_norm, self.head, self.head_b,
                            self.n_heads, self.n_kv, self.head_dim, self.eps)
        self.length = t + 1
        self.pos = self.pos + 1
        return logits


def _decode_step(tokens: torch.Tensor, pos: torch.Tensor, slot: torch.Tensor, k_cache: torch.Tensor,
                 v_cache: torch.Tensor, key_valid: torch.Tensor, cos_table: torch.Tensor, sin_table: torch.Tensor,
                 layers: list[dict], embed: torch.Tensor, final_norm: torch.Tensor, head: torch.Tensor,
                 head_b: torch.Tensor | None, H: int, Hkv: int, D: int, eps: float) -> torch.Tensor:
    """tokens (B,), pos (B,) position ids, slot (1,) cache index; caches (layers, B, Hkv, T, D) updated in
    place; key_valid (B, T) -> logits (B, V)."""
    B = tokens.shape[0]
    x = F.embedding(tokens[:, None], embed)  # (B, 1, E)
    cos, sin = cos_table[pos][:, None, None], sin_table[pos][:, None, None]  # (B, 1, 1, D)
    mask = key_valid[:, None, None, :]  # (B, 1, 1, T)
    for i, w in enumerate(layers):
        h = F.rms_norm(x, (x.shape[-1],), w["ln1"], eps)
        qkv = F.linear(h, w["qkv"], w["qkv_b"])  # (B, 1, (H + 2 Hkv) D)
        q, k, v = qkv.split([H * D, Hkv * D, Hkv * D], dim=-1)
        q, k = q.view(B, 1, H, D), k.view(B, 1, Hkv, D)
        if w["q_norm"] is not None:
            q, k = w["q_norm"](q), w["k_norm"](k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, H, 1, D), (B, Hkv, 1, D)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        k_cache[i].index_copy_(2, slot, k)  # (B, Hkv, T, D) <- (B, Hkv, 1, D)
        v_cache[i].index_copy_(2, slot, v.view(B, 1, Hkv, D).transpose(1, 2))
        att = F.scaled_dot_product_attention(q, k_cache[i], v_cache[i], attn_mask=mask,
                                             enable_gqa=H != Hkv)  # (B, H, 1, D)
        x = x + F.linear(att.transpose(1, 2).reshape(B, 1, H * D), w["o"], w["o_b"])
        h = F.rms_norm(x, (x.shape[-1],), w["ln2"], eps)
        gate, up = F.linear(h, w["gate_up"]).chunk(2, dim=-1)  # (B, 1, I) each
        x = x + F.linear(F.silu(gate) * up, w["down"])
    last = F.rms_norm(x[:, -1], (x.shape[-1],), final_norm, eps)  # (B, E)
    return F.linear(last, head, head_b)  # (B, V)
