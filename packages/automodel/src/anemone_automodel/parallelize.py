"""Shard a Hugging Face model over a (dp, tp) device mesh: DTensor tensor-parallel plans, FSDP2, activation
checkpointing.

Tensor parallel follows Megatron's pattern inside each decoder layer: q/k/v and gate/up are split by output
columns, o and down by input rows, so each layer needs one all-reduce in attention and one in the MLP.
Attention modules reshape with `-1` heads, so each rank simply runs its local heads. Embeddings, norms and
the LM head stay replicated (their gradients are identical on every TP rank because the row-parallel
outputs are all-reduced). FSDP2 then shards every parameter over the dp dimension, per decoder layer.
"""

from __future__ import annotations

from typing import Any

import torch

from anemone_core.errors import AnemoneError

# model_type -> {module path inside a decoder layer: "colwise" | "rowwise"}
_LLAMA_PLAN = {
    "self_attn.q_proj": "colwise", "self_attn.k_proj": "colwise", "self_attn.v_proj": "colwise",
    "self_attn.o_proj": "rowwise",
    "mlp.gate_proj": "colwise", "mlp.up_proj": "colwise", "mlp.down_proj": "rowwise",
}
TP_PLANS: dict[str, dict[str, str]] = {
    "llama": _LLAMA_PLAN,
    "mistral": _LLAMA_PLAN,
    "qwen2": _LLAMA_PLAN,  # q/k/v biases are split with their columns
    "qwen3": _LLAMA_PLAN,  # q_norm/k_norm normalise each head over head_dim: local heads need no change
}


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of transformer blocks (`model.model.layers` in HF, also under a peft wrapper)."""
    for name, module in model.named_modules():
        if name.endswith("layers") and isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            return module
    raise AnemoneError(f"{type(model).__name__} has no `layers` ModuleList: only decoder-only HF causal LMs are supported")


def tp_plan(model: torch.nn.Module) -> dict[str, str]:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in TP_PLANS:
        raise AnemoneError(
            f"parallel.tp > 1 but model_type = {model_type!r} has no tensor-parallel plan (plans exist for "
            f"{sorted(TP_PLANS)}): set parallel.tp=1 and scale with FSDP (parallel.dp), or add a plan to "
            "anemone_automodel.parallelize.TP_PLANS"
        )
    return TP_PLANS[model_type]


def apply_tp(model: torch.nn.Module, tp_mesh: Any) -> None:
    """Parallelize each decoder layer's linear layers over `tp_mesh` (1-D)."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    plan = tp_plan(model)
    cfg = model.config
    tp = tp_mesh.size()
    heads, kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    if heads % tp or kv % tp or cfg.intermediate_size % tp:
        raise AnemoneError(
            f"parallel.tp = {tp} does not divide num_attention_heads = {heads}, num_key_value_heads = {kv} and "
            f"intermediate_size = {cfg.intermediate_size}: choose tp dividing all three"
        )
    styles = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}
    for layer in decoder_layers(model):
        parallelize_module(layer, tp_mesh, {name: styles[s]() for name, s in plan.items()})


def apply_fsdp(model: torch.nn.Module, dp_mesh: Any, reshard_after_forward: bool = True) -> None:
    """FSDP2: one `fully_shard` group per decoder layer, then the root (embeddings, final norm, head)."""
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers(model):
        fully_shard(layer, mesh=dp_mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=dp_mesh, reshard_after_forward=reshard_after_forward)


def apply_activation_checkpointing(model: Any) -> None:
    """Recompute each decoder layer in backward (transformers' own layer checkpointing, non-reentrant), which
    keeps parameter names unchanged, unlike wrapping the layers."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise AnemoneError(f"train.activation_checkpointing = true but {type(model).__name__} does not support it: "
                           "set train.activation_checkpointing=false")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def clip_grad_norm_(params: list[torch.nn.Parameter], max_norm: float | None) -> torch.Tensor:
    """Global L2 norm of the gradients (plain tensors and DTensors on any mesh), clipped to `max_norm`."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    groups: dict[Any, list[torch.Tensor]] = {}
    for g in grads:
        key = (g.device_mesh, g.placements) if isinstance(g, DTensor) else None
        groups.setdefault(key, []).append(g)
    sq = torch.zeros((), dtype=torch.float32)
    for key, gs in groups.items():
        norm = torch.nn.utils.get_total_norm(gs, norm_type=2.0, foreach=False)
        if key is not None:
            norm = norm.full_tensor()  # reduce the partial norms over the mesh
        sq = sq + norm.float().cpu() ** 2
    total = sq.sqrt()
    if max_norm is not None:
        coef = min(1.0, max_norm / (float(total) + 1e-6))  # a Python float scales DTensors and tensors alike
        if coef < 1.0:
            for g in grads:
                g.mul_(coef)
    return total
