"""Parallel-layout planning: every valid TP/PP/CP/EP/DP layout for a model on a cluster, with per-GPU memory.

The arithmetic follows Megatron-Core's training setup (mixed precision with fp32 main gradients, the
distributed optimizer, sequence parallelism whenever tp > 1, the 1F1B pipeline schedule, flash attention).
Each formula is written where it is used. Figures are estimates for planning, not measurements: framework
buffers, fragmentation and the CUDA context are covered by a fixed reserve (`reserve_gb`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from anemone_core.errors import AnemoneError
from anemone_core.parallel import ParallelDims, divisors

GIB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    """The shape numbers that decide memory and valid layouts (a decoder-only transformer)."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int  # dense MLP intermediate size (SwiGLU: gate, up, down)
    vocab: int
    head_dim: int = 0  # 0 -> hidden // heads
    tied: bool = False
    experts: int = 0  # 0 -> dense
    topk: int = 0
    moe_ffn: int = 0  # per-expert intermediate size
    qkv_bias: bool = False
    qk_norm: bool = False

    @property
    def d(self) -> int:
        return self.head_dim or self.hidden // self.heads

    # Parameter counts (elements), per component.
    def attention_params(self) -> int:
        q, kv = self.heads * self.d, self.kv_heads * self.d
        n = self.hidden * q + 2 * self.hidden * kv + q * self.hidden  # Wq, Wk, Wv, Wo
        n += (q + 2 * kv) if self.qkv_bias else 0
        n += 2 * self.d if self.qk_norm else 0
        return n

    def mlp_params(self) -> int:
        return 0 if self.experts else 3 * self.hidden * self.ffn

    def expert_params(self) -> int:
        return self.experts * 3 * self.hidden * self.moe_ffn  # every expert is a SwiGLU MLP

    def router_params(self) -> int:
        return self.hidden * self.experts

    def layer_params(self) -> int:
        return self.attention_params() + self.mlp_params() + self.expert_params() + self.router_params() + 2 * self.hidden

    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    def total_params(self) -> int:
        head = 0 if self.tied else self.embedding_params()
        return self.layers * self.layer_params() + self.embedding_params() + head + self.hidden

    def active_params(self) -> int:
        """Parameters touched per token (MoE: only top-k experts)."""
        if not self.experts:
            return self.total_params()
        inactive = (self.experts - self.topk) * 3 * self.hidden * self.moe_ffn
        return self.total_params() - self.layers * inactive


PRESETS: dict[str, ModelShape] = {  # public architectures' shape numbers, from their published configs
    "smollm2-135m": ModelShape("smollm2-135m", 576, 30, 9, 3, 1536, 49152, tied=True),
    "llama3-8b": ModelShape("llama3-8b", 4096, 32, 32, 8, 14336, 128256),
    "llama3-70b": ModelShape("llama3-70b", 8192, 80, 64, 8, 28672, 128256),
    "llama3-405b": ModelShape("llama3-405b", 16384, 126, 128, 8, 53248, 128256),
    "qwen2.5-7b": ModelShape("qwen2.5-7b", 3584, 28, 28, 4, 18944, 152064, qkv_bias=True),
    "qwen2.5-72b": ModelShape("qwen2.5-72b", 8192, 80, 64, 8, 29568, 152064, qkv_bias=True),
    "qwen3-8b": ModelShape("qwen3-8b", 4096, 36, 32, 8, 12288, 151936, head_dim=128, qk_norm=True),
    "mistral-7b": ModelShape("mistral-7b", 4096, 32, 32, 8, 14336, 32768),
    "mixtral-8x7b": ModelShape("mixtral-8x7b", 4096, 32, 32, 8, 14336, 32000, experts=8, topk=2, moe_ffn=14336),
    "qwen3-30b-a3b": ModelShape("qwen3-30b-a3b", 2048, 48, 32, 4, 6144, 151936, head_dim=128, experts=128, topk=8,
                                moe_ffn=768, qk_norm=True),
}


def shape_from_hf_config(cfg: dict[str, Any], name: str = "model") -> ModelShape:
    """Read a Hugging Face config.json (Llama, Qwen2/3, Mistral, Mixtral, Qwen3-MoE and look-alikes)."""
    try:
        hidden, layers, heads = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
        vocab = cfg["vocab_size"]
    except KeyError as exc:
        raise AnemoneError(f"config of '{name}' lacks {exc}: give a decoder-only transformer's config.json") from None
    experts = cfg.get("num_local_experts") or cfg.get("num_experts") or 0
    mtype = cfg.get("model_type", "")
    return ModelShape(
        name=name, hidden=hidden, layers=layers, heads=heads,
        kv_heads=cfg.get("num_key_value_heads") or heads,
        ffn=cfg.get("intermediate_size", 4 * hidden), vocab=vocab, head_dim=cfg.get("head_dim") or 0,
        tied=bool(cfg.get("tie_word_embeddings", False)), experts=experts,
        topk=cfg.get("num_experts_per_tok", 0) if experts else 0,
        moe_ffn=(cfg.get("moe_intermediate_size") or cfg.get("intermediate_size", 0)) if experts else 0,
        qkv_bias=mtype == "qwen2" or bool(cfg.get("attention_bias", False)), qk_norm=mtype.startswith("qwen3"),
    )


def load_shape(model: str | None = None, preset: str | None = None) -> ModelShape:
    if model and preset:
        raise AnemoneError("give either --model or --preset, not both")
    if preset:
        if preset not in PRESETS:
            raise AnemoneError(f"unknown preset '{preset}': choose from {', '.join(PRESETS)}")
        return PRESETS[preset]
    if model:
        p = Path(model).expanduser()
        cfg_path = p / "config.json" if p.is_dir() else p
        if not cfg_path.is_file():
            raise AnemoneError(f"--model '{model}': no config.json there; give an HF folder or its config.json")
        try:
            cfg = json.loads(cfg_path.read_text())
        except ValueError as exc:
            raise AnemoneError(f"--model '{cfg_path}' is not valid JSON: {exc}") from None
        return shape_from_hf_config(cfg, name=p.name if p.is_dir() else p.parent.name)
    from anemone_core.models import DEFAULT_MODEL, default_model_dir

    cfg = json.loads((default_model_dir() / "config.json").read_text())
    return shape_from_hf_config(cfg, name=DEFAULT_MODEL)


@dataclass
class Cluster:
    gpus: int = 8
    gpus_per_node: int = 8
    gpu_memory_gb: float = 80.0  # GiB per GPU
    seq_len: int = 4096
    micro_batch: int = 1
    precision: str = "bf16"  # bf16 | fp16 | fp8 | fp32
    optimizer: str = "adamw"  # adamw | sgd
    zero: int = 1  # 0: replicated; 1: optimizer states sharded over DP (Megatron's distributed optimizer); 2: +grads; 3: +weights
    reserve_gb: float = 2.0  # CUDA context, NCCL and framework buffers, fragmentation

    def check(self) -> None:
        problems = []
        for name in ("gpus", "gpus_per_node", "seq_len", "micro_batch"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} {getattr(self, name)} must be >= 1")
        if self.gpu_memory_gb <= 0:
            problems.append(f"--gpu-memory-gb {self.gpu_memory_gb} must be > 0")
        if self.gpus > self.gpus_per_node and self.gpus % self.gpus_per_node:
            problems.append(f"--gpus {self.gpus} is not a whole number of nodes of --gpus-per-node {self.gpus_per_node}")
        if self.precision not in ("bf16", "fp16", "fp8", "fp32"):
            problems.append(f"--precision {self.precision!r}: choose bf16, fp16, fp8 or fp32")
        if self.optimizer not in ("adamw", "sgd"):
            problems.append(f"--optimizer {self.optimizer!r}: choose adamw or sgd")
        if self.zero not in (0, 1, 2, 3):
            problems.append(f"--zero {self.zero}: choose 0, 1, 2 or 3")
        if problems:
            raise AnemoneError("; ".join(problems))


@dataclass
class Layout:
    tp: int
    pp: int
    cp: int
    ep: int
    dp: int
    params_per_gpu: int = 0
    weights_gb: float = 0.0
    grads_gb: float = 0.0
    optimizer_gb: float = 0.0
    activations_gb: float = 0.0
    activations_recompute_gb: float = 0.0
    total_gb: float = 0.0
    total_recompute_gb: float = 0.0
    fits: str = "no"  # "yes" | "with recompute" | "no"
    notes: list[str] = field(default_factory=list)


def _bytes_per_param(c: Cluster) -> tuple[int, int, int]:
    """(weights, gradients, optimizer) bytes per parameter.

    Mixed precision (bf16/fp16/fp8) as Megatron-Core trains it: 16-bit weights (fp8 keeps 16-bit weights and
    casts per GEMM), fp32 main gradients (2+4 bytes), and an fp32 master copy plus the optimizer moments:
    AdamW 4+4+4 = 12, SGD with momentum 4+4 = 8. Pure fp32: 4 + 4, AdamW 8 (two moments), SGD 4.
    """
    if c.precision == "fp32":
        return 4, 4, 8 if c.optimizer == "adamw" else 4
    return 2, 4, 12 if c.optimizer == "adamw" else 8


def estimate(shape: ModelShape, c: Cluster, tp: int, pp: int, cp: int, ep: int, dp: int) -> Layout:
    lay = Layout(tp, pp, cp, ep, dp)
    layers_per_stage = shape.layers // pp
    # Parameters on the busiest pipeline stage. Dense weights (attention, MLP) are split by tp; expert weights
    # by ep x tp (expert tensor parallelism = tp). The embedding (V x h, split by tp over the vocabulary) sits
    # on the first stage and the output layer on the last; with pp = 1 one GPU holds both unless they are tied
    # (with pp > 1 Megatron keeps a copy of a tied embedding on the last stage, so either stage holds one V x h).
    expert = shape.expert_params()
    dense_layer = shape.layer_params() - expert
    emb = shape.embedding_params() / tp
    ends = emb * (2 if pp == 1 and not shape.tied else 1)
    dense = layers_per_stage * dense_layer / tp + ends
    experts_here = layers_per_stage * expert / (ep * tp)
    params = dense + experts_here
    lay.params_per_gpu = int(params)

    w, g, o = _bytes_per_param(c)
    # ZeRO-style sharding over the data-parallel ranks (Megatron shards over dp x cp; expert weights over the
    # expert-data-parallel group dp x cp / ep).
    shard_dense, shard_expert = dp * cp, max(1, dp * cp // ep)

    def sharded(nbytes: int, stage: int) -> float:
        if c.zero >= stage:
            return dense * nbytes / shard_dense + experts_here * nbytes / shard_expert
        return params * nbytes

    lay.weights_gb = sharded(w, 3) / GIB
    lay.grads_gb = sharded(g, 2) / GIB
    lay.optimizer_gb = sharded(o, 1) / GIB

    # Activations kept for backward, per layer and micro-batch, in elements per token (flash attention: no
    # s x s score matrix is stored; no dropout, as in current LLM recipes):
    #   attention: norm input h + QKV input h + Q, K, V (heads*d + 2*kv_heads*d) + attention output heads*d
    #   dense MLP: norm input h + MLP input h + gate, up (2f) + act(gate) f + act*up f        = 2h + 4f
    #   MoE MLP:   norm input h + router input h + per routed copy (top-k): input h + 4 * moe_ffn
    # Sequence parallelism (tp > 1) splits all of them by tp; context parallelism splits the sequence by cp.
    h, d = shape.hidden, shape.d
    attn = 2 * h + 2 * shape.heads * d + 2 * shape.kv_heads * d
    mlp = 2 * h + (shape.topk * (h + 4 * shape.moe_ffn) if shape.experts else 4 * shape.ffn)
    act_bytes = 4 if c.precision == "fp32" else 2
    tokens = (c.seq_len // cp) * c.micro_batch
    per_layer = tokens * (attn + mlp) * act_bytes / tp
    # 1F1B: the first stage holds pp micro-batches in flight, each through layers/pp layers: `layers` layers'
    # worth in total, whatever pp is (Korthikanti et al. 2022, "Reducing Activation Recomputation").
    in_flight_layers = layers_per_stage * pp
    # Logits for the loss on the last stage: fp32 (tokens x V/tp) plus their gradient.
    logits = tokens * shape.vocab / tp * 4 * 2
    lay.activations_gb = (in_flight_layers * per_layer + logits) / GIB
    # Full recompute keeps only each layer's input (h per token, split by tp) and rebuilds one layer at a time.
    layer_input = tokens * h * act_bytes / tp
    lay.activations_recompute_gb = (in_flight_layers * layer_input + per_layer + logits) / GIB

    states = lay.weights_gb + lay.grads_gb + lay.optimizer_gb + c.reserve_gb
    lay.total_gb = states + lay.activations_gb
    lay.total_recompute_gb = states + lay.activations_recompute_gb
    lay.fits = "yes" if lay.total_gb <= c.gpu_memory_gb else (
        "with recompute" if lay.total_recompute_gb <= c.gpu_memory_gb else "no")
    if tp > 1 and c.gpus_per_node % tp:
        lay.notes.append("tp does not divide gpus per node")
    return lay


def _check_fixed(shape: ModelShape, c: Cluster, fixed: dict[str, int | None]) -> None:
    """Validate the user's fixed sizes up front, with the valid choices in each message."""
    tp, pp, ep = fixed.get("tp"), fixed.get("pp"), fixed.get("ep")
    ParallelDims(tp=tp or 1, pp=pp or 1, ep=ep or 1).check_model(
        shape.heads, shape.kv_heads, shape.layers, shape.experts or None)
    if tp and tp > c.gpus_per_node:
        raise AnemoneError(f"tp={tp} exceeds --gpus-per-node {c.gpus_per_node}: tensor parallelism needs the "
                           f"intra-node links; choose tp <= {c.gpus_per_node}")
    if any(v is not None for v in fixed.values()):
        dims = ParallelDims(dp=fixed.get("dp"), tp=tp or 1, pp=pp or 1, cp=fixed.get("cp") or 1, ep=ep or 1)
        if tp and pp:  # enough is fixed to check the world size now, with the precise message
            dims.resolve(c.gpus)


def plan(shape: ModelShape, c: Cluster, tp: int | None = None, pp: int | None = None, cp: int | None = None,
         ep: int | None = None, dp: int | None = None) -> list[Layout]:
    """Every valid layout (fixed sizes respected), best first: fits without recompute, then with recompute,
    then the rest; within each group the most data-parallel (least model-parallel communication) first."""
    c.check()
    _check_fixed(shape, c, {"tp": tp, "pp": pp, "cp": cp, "ep": ep, "dp": dp})
    out = []
    for t in divisors(c.gpus):
        if t > c.gpus_per_node or shape.heads % t or shape.kv_heads % t or (tp and t != tp):
            continue
        for p in divisors(shape.layers):
            if c.gpus % (t * p) or (pp and p != pp):
                continue
            for x in divisors(c.gpus // (t * p)):
                if (cp and x != cp) or (x > 1 and c.seq_len % (2 * x)):  # load-balanced CP splits into 2*cp chunks
                    continue
                d = c.gpus // (t * p * x)
                if dp and d != dp:
                    continue
                for e in (divisors(shape.experts) if shape.experts else [1]):
                    if (d * x) % e or (ep and e != ep):
                        continue
                    out.append(estimate(shape, c, t, p, x, e, d))
    if not out:
        fixed = ", ".join(f"{k}={v}" for k, v in dict(tp=tp, pp=pp, cp=cp, ep=ep, dp=dp).items() if v)
        raise AnemoneError(
            f"no layout of {c.gpus} GPUs matches {fixed or 'the model'} (tp must divide heads={shape.heads} and "
            f"kv_heads={shape.kv_heads} and stay within a node, pp must divide layers={shape.layers}, "
            f"dp*tp*pp*cp must equal {c.gpus}): relax a fixed size or change --gpus")
    rank = {"yes": 0, "with recompute": 1, "no": 2}
    out.sort(key=lambda lay: (rank[lay.fits], lay.tp * lay.pp * lay.cp, -lay.ep, lay.total_gb))
    return out


def plan_report(shape: ModelShape, c: Cluster, layouts: list[Layout]) -> dict[str, Any]:
    best = next((lay for lay in layouts if lay.fits != "no"), None)
    return {
        "model": asdict(shape) | {"total_params": shape.total_params(), "active_params": shape.active_params()},
        "cluster": asdict(c),
        "layouts": [asdict(lay) for lay in layouts],
        "recommended": asdict(best) if best else None,
        "fitting": sum(lay.fits != "no" for lay in layouts),
    }
