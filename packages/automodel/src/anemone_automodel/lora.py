"""LoRA through peft: apply, save the adapter in PEFT's format, merge into a plain HF model."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from anemone_core.errors import AnemoneError

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def apply_lora(model: torch.nn.Module, r: int = 16, alpha: float = 32, dropout: float = 0.0,
               target_modules: Sequence[str] | str = DEFAULT_TARGETS) -> Any:
    """Wrap `model` in a `peft.PeftModel` with LoRA on `target_modules`; only the adapters are trainable."""
    from peft import LoraConfig, get_peft_model

    targets = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names and t != "all-linear"]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise AnemoneError(f"lora.target_modules = {targets}: {missing} match no module of this model: "
                           f"choose from {linear} or 'all-linear'")
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def fuse_lora_forward(peft_model: Any) -> int:
    """Run every LoRA linear layer as one GEMM-with-accumulate for its adapter: the same function as peft's
    `base(x) + lora_B(lora_A(dropout(x))) * scaling`, with the scaling applied to the rank-r activation and the
    sum done by `addmm` into the base output, which spares two full-width elementwise passes per layer in
    the forward and one in the backward (~210 layers in SmolLM2 with the default targets). Parameters, state
    dicts and saved adapters are unchanged; any case the fast path does not cover (merged or disabled
    adapters, several adapters, DoRA and other variants, adapter biases, mixed dtypes, kwargs) goes through
    peft's own forward. Returns how many layers were switched."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    count = 0
    for module in peft_model.modules():
        if isinstance(module, LoraLinear) and not isinstance(module.forward, functools.partial):
            module.forward = functools.partial(_fused_lora_forward, module)
            count += 1
    return count


def _fused_lora_forward(layer: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    active = layer.active_adapters
    name = active[0] if len(active) == 1 else None
    if (args or kwargs or layer.disable_adapters or layer.merged or name not in layer.lora_A
            or name in layer.lora_variant or layer.lora_B[name].bias is not None
            or x.dtype != layer.lora_A[name].weight.dtype):
        return type(layer).forward(layer, x, *args, **kwargs)  # peft's own
    result = layer.base_layer(x)  # (..., out)
    h = layer.lora_A[name](layer.lora_dropout[name](x)) * layer.scaling[name]  # (..., r)
    out = torch.addmm(result.reshape(-1, result.shape[-1]), h.reshape(-1, h.shape[-1]),
                      layer.lora_B[name].weight.t())  # result + h @ B^T, (N, out)
    return out.view(result.shape)


def is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a declared dependency
        return False
    return isinstance(model, PeftModel)


def merged_model(peft_model: Any) -> torch.nn.Module:
    """A plain transformers model with the adapters folded into the base weights (the PEFT model is consumed)."""
    return peft_model.merge_and_unload()


def save_adapter(peft_model: Any, out: str | Path) -> None:
    """Adapter weights + adapter_config.json, loadable with `peft.PeftModel.from_pretrained(base, out)`."""
    peft_model.save_pretrained(str(out), safe_serialization=True)
