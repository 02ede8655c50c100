"""Batched forward passes with a KV cache, for the torch generation backend.

`FastDecoder` runs Llama-family HF models (llama, mistral, qwen2, qwen3) itself: fused QKV and gate/up
matmuls, a preallocated cache and a boolean key mask, so a decode step is few large ops (on CPU, the per-op
overhead of the HF stack dominates a 135M model). It reads the HF module's weights, so a refit of the HF
module followed by `refresh()` is all weight sync needs. `HFDecoder` is the fallback for any other causal LM
(MoE, sliding windows) through `model(..., past_key_values=DynamicCache)`.

Both take left-padded prompts: ids (B, P) with `valid` (B, P) marking real tokens.

`FastDecoder(matmul_dtype="bfloat16")` runs the weight matmuls (the fused projections and the LM head) in
bf16 with fp32 accumulation and everything else (embeddings, norms, RoPE, attention, the KV cache, the residual
stream, logits) in fp32, as TF32 does on a GPU. On CPU the bf16 matrices are pre-packed once per refit for
oneDNN (`torch.ops.mkldnn._reorder_linear_weight`), whose AMX / AVX512-BF16 kernels then run any batch size;
on CUDA they are plain bf16 copies. Generated logprobs then differ from the fp32 trainer's by bf16 rounding
(the GRPO mismatch metric shows how much); the trainer always scores in its own precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FAST_TYPES = {"llama", "mistral", "qwen2", "qwen3"}
MATMUL_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def check_matmul_dtype(matmul_dtype: str, device: torch.device | str) -> torch.dtype:
    """The torch dtype of a `matmul_dtype` name, or a ValueError saying what to set instead."""
    if matmul_dtype not in MATMUL_DTYPES:
        raise ValueError(f"matmul_dtype={matmul_dtype!r}: use one of {sorted(MATMUL_DTYPES)}")
    dtype = MATMUL_DTYPES[matmul_dtype]
    if dtype == torch.bfloat16 and torch.device(device).type == "cpu" and not (
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        raise ValueError("matmul_dtype='bfloat16' on CPU needs oneDNN with bf16 support (a CPU with "
                         "AVX512-BF16 or AMX); this one has none: set matmul_dtype='float32'")
    return dtype


def fast_supported(model: torch.nn.Module) -> bool:
    cfg = model.config
    if cfg.model_type not in FAST_TYPES:
        return False
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return False
    return getattr(cfg, "hidden_act", "silu") == "silu"


def left_pad(prompts: list[list[int]], pad_id: int = 0,
             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of any lengths -> ids (B, P) with every prompt ending at column P-1, and valid (B, P)."""
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    valid = torch.zeros(len(prompts), P, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
        valid[i, P - len(p):] = True
    return ids.to(device), valid.to(device)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class FastDecoder:
    """Llama-family decoding with a static KV cache of shape (layers, B, kv_heads, max_len, head_dim)."""

    compacts = True  # finished rows can be dropped from the batch (`keep`)
    transpose_on_cpu = True  # see refresh

    def __init__(self, model: torch.nn.Module, matmul_dtype: str = "float32") -> None:
        self.model = model
        self.matmul_dtype = check_matmul_dtype(matmul_dtype, model.model.embed_tokens.weight.device)
        cfg = model.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = cfg.rms_norm_eps
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Rebuild the fused weights from the HF module (after its weights changed).

        On CPU every matrix is kept transposed and contiguous, (in, out), and multiplied as `x @ w`: at decode
        batch sizes that layout is faster than `F.linear` on the HF (out, in) layout (measured on this 2-core
        host, one thread, SmolLM2-135M's matrices: 1.16x at batch 1, 1.33x at batch 8, equal at 32; the
        matmul-floor rows of benchmarks/rl_generation.py). It costs a copy of the weights; on a GPU, where
        the layout does not matter to cuBLAS, the fused matrices keep the HF layout. With bf16 matmuls on CPU
        the matrices are oneDNN-packed bf16 copies instead (see the module docstring)."""
        on_cpu = self.model.model.embed_tokens.weight.device.type == "cpu"
        low = self.matmul_dtype != torch.float32
        self.packed = low and on_cpu
        self.transposed = self.transpose_on_cpu and on_cpu and not low

        def mat(*ws: torch.Tensor) -> torch.Tensor:  # (out, in) pieces -> the matrix `_linear` multiplies by
            w = torch.cat(ws) if len(ws) > 1 else ws[0]
            if self.packed:
                return torch.ops.mkldnn._reorder_linear_weight(w.to(self.matmul_dtype))
            if low:
                return w.to(self.matmul_dtype)
            return w.t().contiguous() if self.transposed else w

        self.layers = []
        for layer in self.model.model.layers:
            att, mlp = layer.self_attn, layer.mlp
            bias = None
            if att.q_proj.bias is not None:
                bias = torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias])
            self.layers.append({
                "ln1": layer.input_layernorm.weight,
                "qkv": mat(att.q_proj.weight, att.k_proj.weight, att.v_proj.weight),  # (Hq+2Hkv)*D x E
                "qkv_b": bias,
                "q_norm": getattr(att, "q_norm", None),
                "k_norm": getattr(att, "k_norm", None),
                "o": mat(att.o_proj.weight),
                "o_b": att.o_proj.bias,
                "ln2": layer.post_attention_layernorm.weight,
                "gate_up": mat(mlp.gate_proj.weight, mlp.up_proj.weight),  # 2I x E
                "down": mat(mlp.down_proj.weight),
            })
        self.embed = self.model.model.embed_tokens.weight
        self.final_norm = self.model.model.norm.weight
        self.head = mat(self.model.lm_head.weight)
        self.head_b = getattr(self.model.lm_head, "bias", None)

    def _linear(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., in) -> (..., out) by a matrix from `refresh` (transposed on CPU; bf16, maybe packed).

        With bf16 matmuls, x is rounded to bf16, the product accumulates in fp32 and comes back as bf16 values
        in an fp32 tensor (what an HF model whose Linear layers run in bf16 computes)."""
        if self.packed:
            y = torch.ops.mkldnn._linear_pointwise(x.to(self.matmul_dtype), w, None, "none", [], "").float()
        elif self.matmul_dtype != torch.float32:
            y = F.linear(x.to(self.matmul_dtype), w).float()
        elif not self.transposed:
            return F.linear(x, w, b)
        else:
            y = x @ w
        return y if b is None else y + b

    def start(self, batch: int, max_len: int) -> None:
        p = self.embed
        shape = (len(self.layers), batch, self.n_kv, max_len, self.head_dim)
        self.k = torch.zeros(shape, dtype=p.dtype, device=p.device)
        self.v = torch.zeros(shape, dtype=p.dtype, device=p.device)
        self.key_valid = torch.zeros(batch, max_len, dtype=torch.bool, device=p.device)
        self.length = 0  # cache slots used (same for every row; padding is masked)
        self.pos = torch.zeros(batch, dtype=torch.long, device=p.device)  # next position id per row

    def keep(self, rows: torch.Tensor) -> None:
        """Drop finished rows from the cache: rows (B',) indices to keep."""
        self._select_rows(rows)

    def _select_rows(self, rows: torch.Tensor) -> None:
        """The cache of rows (B',) of the current batch, in that order (a row may repeat)."""
        self.k, self.v = self.k[:, rows], self.v[:, rows]
        self.key_valid, self.pos = self.key_valid[rows], self.pos[rows]

    def _forward(self, ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids (B, S), pos (B, S) position ids, mask (B, 1, S, length+S) -> last hidden logits (B, V)."""
        B, S = ids.shape
        H, Hkv, D = self.n_heads, self.n_kv, self.head_dim
        t0, t1 = self.length, self.length + S
        x = F.embedding(ids, self.embed)  # (B, S, E)
        cos, sin = self.model.model.rotary_emb(x, pos)  # (B, S, D) each
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, S, D)
        for i, w in enumerate(self.layers):
            h = F.rms_norm(x, (x.shape[-1],), w["ln1"], self.eps)
            qkv = self._linear(h, w["qkv"], w["qkv_b"])  # (B, S, (H + 2 Hkv) D)
            qk, v = qkv.split([(H + Hkv) * D, Hkv * D], dim=-1)
            qk = qk.view(B, S, H + Hkv, D)
            if w["q_norm"] is not None:  # qwen3: RMSNorm per head on q and k
                qk = torch.cat([w["q_norm"](qk[:, :, :H]), w["k_norm"](qk[:, :, H:])], dim=2)
            qk = qk.transpose(1, 2)  # (B, H + Hkv, S, D): RoPE on the q and k heads at once
            qk = qk * cos + _rotate_half(qk) * sin
            q, k = qk[:, :H], qk[:, H:]  # (B, H, S, D), (B, Hkv, S, D)
            self.k[i, :, :, t0:t1] = k
            self.v[i, :, :, t0:t1] = v.view(B, S, Hkv, D).transpose(1, 2)
            att = F.scaled_dot_product_attention(
                q, self.k[i, :, :, :t1], self.v[i, :, :, :t1], attn_mask=mask, enable_gqa=H != Hkv
            )  # (B, H, S, D)
            x = x + self._linear(att.transpose(1, 2).reshape(B, S, H * D), w["o"], w["o_b"])
            h = F.rms_norm(x, (x.shape[-1],), w["ln2"], self.eps)
            gate, up = self._linear(h, w["gate_up"]).chunk(2, dim=-1)  # (B, S, I) each
            x = x + self._linear(F.silu(gate) * up, w["down"])
        self.length = t1
        last = F.rms_norm(x[:, -1], (x.shape[-1],), self.final_norm, self.eps)  # (B, E)
        return self._linear(last, self.head, self.head_b)  # (B, V)

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Left-padded prompts ids (B, P), valid (B, P) -> next-token logits (B, V).

        A prompt that appears several times in the batch (GRPO samples each prompt G times) is run once and
        its cache rows are copied to its repeats, so prefill costs the distinct prompts only."""
        B, P = ids.shape
        distinct, inverse = torch.unique(torch.cat([ids, valid.long()], dim=1), dim=0, return_inverse=True)
        if len(distinct) == B:
            return self._prefill(ids, valid)
        self.start(len(distinct), self.k.shape[3])
        logits = self._prefill(distinct[:, :P], distinct[:, P:].bool())  # (B_distinct, V)
        self._select_rows(inverse)
        return logits[inverse]

    def _prefill(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        B, P = ids.shape
        pos = (valid.long().cumsum(-1) - 1).clamp_min(0)  # (B, P)
        self.key_valid[:, :P] = valid
        causal = torch.ones(P, P, dtype=torch.bool, device=ids.device).tril()  # (P, P)
        mask = causal[None] & valid[:, None, :]  # (B, P, P)
        mask |= torch.eye(P, dtype=torch.bool, device=ids.device)[None]  # pad rows see themselves: no NaN
        self.pos = valid.long().sum(-1)  # (B,)
        return self._forward(ids, pos, mask[:, None])

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """One new token per row, tokens (B,) -> logits (B, V)."""
        t = self.length
        self.key_valid[:, t] = True
        mask = self.key_valid[:, None, None, : t + 1]  # (B, 1, 1, t+1)
        logits = self._forward(tokens[:, None], self.pos[:, None], mask)
        self.pos = self.pos + 1
        return logits


class HFDecoder:
    """Any HF causal LM through its own forward and DynamicCache."""

    compacts = True  # finished rows leave the cache (`keep`, through the cache's own batch selection)

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def refresh(self) -> None:
        pass

    def start(self, batch: int, max_len: int) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)
        self.mask: torch.Tensor | None = None
        self.pos: torch.Tensor | None = None

    def keep(self, rows: torch.Tensor) -> None:
        """Drop finished rows: rows (B',) indices to keep, from every cache layer, the mask and the positions."""
        assert self.mask is not None and self.pos is not None
        self.cache.batch_select_indices(rows)
        self.mask, self.pos = self.mask[rows], self.pos[rows]

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        self.mask = valid.long()
        pos = (self.mask.cumsum(-1) - 1).clamp_min(0)
        out = self.model(input_ids=ids, attention_mask=self.mask, position_ids=pos, past_key_values=self.cache,
                         use_cache=True, logits_to_keep=1)
        self.pos = self.mask.sum(-1)
        return out.logits[:, -1]

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        assert self.mask is not None and self.pos is not None
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=-1)
        out = self.model(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=self.pos[:, None],
                         past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.pos = self.pos + 1
        return out.logits[:, -1]


def build_decoder(model: torch.nn.Module, fast: bool = True, compile: bool = False,
                  matmul_dtype: str = "float32") -> FastDecoder | HFDecoder:
    """FastDecoder for Llama-family models (its decode step torch.compile'd with `compile`), else HFDecoder."""
    check_matmul_dtype(matmul_dtype, next(model.parameters()).device)
    special = [name for name, on in [("compile=True", compile), (f"matmul_dtype={matmul_dtype!r}",
                                                                  matmul_dtype != "float32")] if on]
    if not (fast and fast_supported(model)):
        if special:
            raise ValueError(f"{' and '.join(special)} needs the fast decoder, which runs Llama-family models "
                             f"({sorted(FAST_TYPES)}, SiLU, no sliding window); got model_type="
                             f"{model.config.model_type!r}{'' if fast else ' with fast=False'}: leave them at "
                             f"their defaults (compile=False, matmul_dtype='float32')")
        return HFDecoder(model)
    if compile:
        if matmul_dtype != "float32":
            raise ValueError(f"compile=True runs fp32 matmuls; got matmul_dtype={matmul_dtype!r}: choose one of "
                             "the two (matmul_dtype='bfloat16' alone is the faster on a CPU with AMX)")
        from anemone_rl.generation.compiled import CompiledDecoder

        return CompiledDecoder(model)
    return FastDecoder(model, matmul_dtype)
