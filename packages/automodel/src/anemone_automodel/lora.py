"""LoRA through peft: apply, save the adapter in PEFT's format, merge into a plain HF model."""

from __future__ import annotations

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
