"""Per-architecture bridges: the HF config -> TransformerConfig mapping and the parameter table.

Adding an architecture is adding an `ArchBridge` to `REGISTRY`: a table of rows (see `mapping.py`) and the
few config fields that differ from the Llama defaults. The machinery does TP/PP/EP for every one alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from anemone_bridge.mapping import Mapping, Table

M = Mapping
L = "decoder.layers.*."
H = "model.layers.*."

_EMBED = M("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), "vocab")
_FINAL = [
    M("decoder.final_layernorm.weight", ("model.norm.weight",), "replicated"),
    M("output_layer.weight", ("lm_head.weight",), "vocab"),  # dropped when embeddings are tied
]
_ATTN = [
    M(L + "input_layernorm.weight", (H + "input_layernorm.weight",), "replicated"),
    M(L + "self_attention.linear_qkv.weight",
      (H + "self_attn.q_proj.weight", H + "self_attn.k_proj.weight", H + "self_attn.v_proj.weight"), "qkv"),
    M(L + "self_attention.linear_proj.weight", (H + "self_attn.o_proj.weight",), "row"),
    M(L + "pre_mlp_layernorm.weight", (H + "post_attention_layernorm.weight",), "replicated"),
]
_QKV_BIAS = [
    M(L + "self_attention.linear_qkv.bias",
      (H + "self_attn.q_proj.bias", H + "self_attn.k_proj.bias", H + "self_attn.v_proj.bias"), "qkv"),
]
_QK_NORM = [
    M(L + "self_attention.q_layernorm.weight", (H + "self_attn.q_norm.weight",), "replicated"),
    M(L + "self_attention.k_layernorm.weight", (H + "self_attn.k_norm.weight",), "replicated"),
]
_DENSE_MLP = [
    M(L + "mlp.linear_fc1.weight", (H + "mlp.gate_proj.weight", H + "mlp.up_proj.weight"), "gated"),
    M(L + "mlp.linear_fc2.weight", (H + "mlp.down_proj.weight",), "row"),
]
_X = L + "mlp.experts.local_experts.E."  # E: the global expert index (renamed to the local one per EP rank)


@dataclass(frozen=True)
class ArchBridge:
    """One architecture: its HF class names, its parameter table and its config switches."""

    name: str
    hf_architectures: tuple[str, ...]
    table: Table
    qkv_bias: bool = False
    qk_norm: bool = False
    moe: bool = False
    experts_key: str = "num_local_experts"  # the HF config field holding the expert count
    moe_ffn_key: str = "intermediate_size"
    extra: dict[str, Any] = field(default_factory=dict)

    def num_experts(self, hf_config: Any) -> int:
        return int(getattr(hf_config, self.experts_key, 0) or 0) if self.moe else 0


def _moe_table(attn: list[Mapping], block: str, router: str, w_gate: str, w_up: str, w_down: str) -> Table:
    return Table(
        globals=[_EMBED, *_FINAL],
        per_layer=[*attn, M(L + "mlp.router.weight", (H + f"{block}.{router}.weight",), "replicated")],
        per_expert=[
            M(_X + "linear_fc1.weight",
              (H + f"{block}.experts.E.{w_gate}.weight", H + f"{block}.experts.E.{w_up}.weight"), "gated"),
            M(_X + "linear_fc2.weight", (H + f"{block}.experts.E.{w_down}.weight",), "row"),
        ],
    )


REGISTRY: dict[str, ArchBridge] = {
    b.name: b
    for b in [
        ArchBridge("llama", ("LlamaForCausalLM",), Table([_EMBED, *_FINAL], [*_ATTN, *_DENSE_MLP])),
        ArchBridge("mistral", ("MistralForCausalLM",), Table([_EMBED, *_FINAL], [*_ATTN, *_DENSE_MLP])),
        ArchBridge("qwen2", ("Qwen2ForCausalLM",), Table([_EMBED, *_FINAL], [*_ATTN, *_QKV_BIAS, *_DENSE_MLP]),
                   qkv_bias=True),
        ArchBridge("qwen3", ("Qwen3ForCausalLM",), Table([_EMBED, *_FINAL], [*_ATTN, *_QK_NORM, *_DENSE_MLP]),
                   qk_norm=True),
        ArchBridge("mixtral", ("MixtralForCausalLM",),
                   _moe_table(_ATTN, "block_sparse_moe", "gate", "w1", "w3", "w2"), moe=True),
        ArchBridge("qwen3_moe", ("Qwen3MoeForCausalLM",),
                   _moe_table([*_ATTN, *_QK_NORM], "mlp", "gate", "gate_proj", "up_proj", "down_proj"),
                   qk_norm=True, moe=True, experts_key="num_experts", moe_ffn_key="moe_intermediate_size"),
    ]
}


def list_supported_models() -> list[dict[str, Any]]:
    """The supported architectures: name, HF class names and features."""
    return [
        {"name": b.name, "hf_architectures": list(b.hf_architectures), "qkv_bias": b.qkv_bias,
         "qk_norm": b.qk_norm, "moe": b.moe}
        for b in REGISTRY.values()
    ]


def bridge_for(hf_config: Any) -> ArchBridge:
    """The bridge for an HF config, by `architectures[0]` then `model_type`; an AnemoneError otherwise."""
    from anemone_core.errors import AnemoneError

    archs = list(getattr(hf_config, "architectures", None) or [])
    for b in REGISTRY.values():
        if any(a in b.hf_architectures for a in archs):
            return b
    model_type = getattr(hf_config, "model_type", None)
    if not archs and model_type in REGISTRY:
        return REGISTRY[model_type]
    supported = ", ".join(f"{a} ({b.name})" for b in REGISTRY.values() for a in b.hf_architectures)
    raise AnemoneError(
        f"architecture {archs or model_type!r} (config.json 'architectures'/'model_type') is not supported by "
        f"anemone-bridge: supported are {supported}; `anemone bridge list` shows them"
    )
