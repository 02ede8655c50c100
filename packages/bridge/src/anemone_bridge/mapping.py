"""The mapping machinery: one declarative table row per parameter, used in both directions.

A row names one megatron-core parameter (with `*` standing for the global layer index and, for MoE, `E`
for the global expert index) and the Hugging Face tensors it is made of, plus a `kind` saying how:

    kind        HF tensors           Megatron tensor, TP rank r of t          split dim
    direct      (w,)                 w (no TP)                                 -
    replicated  (w,)                 w on every TP rank                        -
    column      (w,)                 w.chunk(t, 0)[r]                          0
    row         (w,)                 w.chunk(t, 1)[r]                          1
    vocab       (w,)                 pad rows to the padded vocab, chunk 0     0
    qkv         (q, k, v)            per query group [q_g; k_g; v_g], chunk 0  0
    gated       (gate, up)           [gate.chunk(t)[r]; up.chunk(t)[r]]        0

`to_megatron` builds one TP shard from the HF tensors; `to_hf` rebuilds the HF tensors from all TP shards.
TP scatter/gather, PP layer ownership and EP expert numbering live here and in `plan.py`, not in the
per-architecture tables (`architectures.py`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import torch

KINDS = ("direct", "replicated", "column", "row", "vocab", "qkv", "gated")


@dataclass(frozen=True)
class Geometry:
    """The shape facts a transform needs (from the HF config)."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int  # the real vocabulary (HF)
    padded_vocab_size: int  # Megatron's, divisible by TP


@dataclass(frozen=True)
class Mapping:
    """One table row: a Megatron parameter pattern and its HF source patterns."""

    megatron: str
    hf: tuple[str, ...]
    kind: str = "direct"

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind
        assert len(self.hf) == {"qkv": 3, "gated": 2}.get(self.kind, 1), self

    @property
    def tp_dim(self) -> int | None:
        return {"column": 0, "row": 1, "vocab": 0, "qkv": 0, "gated": 0}.get(self.kind)

    def resolve(self, layer: int | None = None, expert: int | None = None) -> Mapping:
        """The row with `*` replaced by the layer index and `E` by the expert index."""

        def sub(p: str) -> str:
            if layer is not None:
                p = p.replace("*", str(layer))
            if expert is not None:
                p = p.replace(".E.", f".{expert}.")
            return p

        return Mapping(sub(self.megatron), tuple(sub(h) for h in self.hf), self.kind)

    # ---- HF -> Megatron -------------------------------------------------------------------------
    def to_megatron(self, tensors: list[torch.Tensor], geo: Geometry, tp_rank: int, tp_size: int) -> torch.Tensor:
        if self.kind in ("direct", "replicated"):
            return tensors[0]
        if self.kind == "column":
            return tensors[0].chunk(tp_size, 0)[tp_rank]
        if self.kind == "row":
            return tensors[0].chunk(tp_size, 1)[tp_rank]
        if self.kind == "vocab":
            w = tensors[0]  # (V, H)
            if geo.padded_vocab_size > w.shape[0]:
                pad = w.new_zeros(geo.padded_vocab_size - w.shape[0], *w.shape[1:])
                w = torch.cat([w, pad], 0)  # (V_pad, H)
            return w.chunk(tp_size, 0)[tp_rank]
        if self.kind == "qkv":
            return qkv_interleave(*tensors, geo).chunk(tp_size, 0)[tp_rank]
        if self.kind == "gated":
            gate, up = tensors
            return torch.cat([gate.chunk(tp_size, 0)[tp_rank], up.chunk(tp_size, 0)[tp_rank]], 0)
        raise AssertionError(self.kind)

    # ---- Megatron -> HF -------------------------------------------------------------------------
    def to_hf(self, shards: list[torch.Tensor], geo: Geometry) -> list[torch.Tensor]:
        """Rebuild the HF tensors from every TP rank's shard (in TP rank order)."""
        if self.kind in ("direct", "replicated"):
            return [shards[0]]
        if self.kind == "column":
            return [_cat(shards, 0)]
        if self.kind == "row":
            return [_cat(shards, 1)]
        if self.kind == "vocab":
            return [_cat(shards, 0)[: geo.vocab_size]]  # drop the TP padding rows
        if self.kind == "qkv":
            return list(qkv_split(_cat(shards, 0), geo))
        if self.kind == "gated":
            halves = [s.chunk(2, 0) for s in shards]
            return [_cat([h[0] for h in halves], 0), _cat([h[1] for h in halves], 0)]
        raise AssertionError(self.kind)

    def megatron_shape(self, hf_shapes: list[tuple[int, ...]], geo: Geometry, tp_size: int) -> tuple[int, ...]:
        """The shape of one TP shard, from the HF shapes (used to size receive buffers)."""
        metas = [torch.empty(s, device="meta") for s in hf_shapes]
        return tuple(self.to_megatron(metas, geo, 0, tp_size).shape)


def qkv_interleave(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """HF q (nh*d, ...), k (ng*d, ...), v (ng*d, ...) -> Megatron linear_qkv (ng*(nh/ng+2)*d, ...).

    Megatron groups the rows by query group: [q heads of group 0, k_0, v_0, q heads of group 1, ...], so a
    contiguous TP chunk holds whole groups. Works for weights (2-D) and biases (1-D)."""
    ng, d = geo.num_kv_heads, geo.head_dim
    hpg = geo.num_heads // ng
    rest = q.shape[1:]
    q = q.reshape(ng, hpg * d, *rest)  # (ng, hpg*d, ...)
    k = k.reshape(ng, d, *rest)  # (ng, d, ...)
    v = v.reshape(ng, d, *rest)
    return torch.cat([q, k, v], 1).reshape(ng * (hpg + 2) * d, *rest)


def qkv_split(qkv: torch.Tensor, geo: Geometry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The inverse of `qkv_interleave`."""
    ng, d = geo.num_kv_heads, geo.head_dim
    hpg = geo.num_heads // ng
    rest = qkv.shape[1:]
    grouped = qkv.reshape(ng, (hpg + 2) * d, *rest)
    q, k, v = grouped.split([hpg * d, d, d], 1)
    return (q.reshape(ng * hpg * d, *rest).contiguous(), k.reshape(ng * d, *rest).contiguous(),
            v.reshape(ng * d, *rest).contiguous())


@dataclass
class Table:
    """An architecture's parameter table: rows for the embedding/head, per layer, and per expert."""

    globals: list[Mapping]
    per_layer: list[Mapping]
    per_expert: list[Mapping] = field(default_factory=list)

    def expand(self, num_layers: int, num_experts: int = 0) -> list[Mapping]:
        """Every concrete row in a deterministic order (the same on every rank)."""
        rows = [m for m in self.globals if m.megatron.startswith("embedding.")]
        for i in range(num_layers):
            rows += [m.resolve(layer=i) for m in self.per_layer]
            for e in range(num_experts):
                rows += [m.resolve(layer=i, expert=e) for m in self.per_expert]
        rows += [m for m in self.globals if not m.megatron.startswith("embedding.")]
        return rows


def _cat(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
    """torch.cat, without the copy when there is one part (TP=1: the shard is the whole tensor)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


def matches_any(name: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)
