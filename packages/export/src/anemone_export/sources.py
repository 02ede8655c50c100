"""What an exporter starts from: an HF folder, optionally with a PEFT LoRA adapter merged in, or a Megatron
checkpoint converted through anemone-bridge. One `Source` (model + tokenizer) goes into every exporter."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from anemone_core.errors import AnemoneError, require
from anemone_core.models import resolve_model

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Source:
    model: torch.nn.Module  # an HF causal LM in eval mode, fp32 on CPU (the reference every validation uses)
    tokenizer: object
    folder: Path  # the HF folder the base weights came from
    description: str


def _adapter_base(adapter: Path) -> str | None:
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    base = cfg.get("base_model_name_or_path")
    return base if base and Path(base).expanduser().is_dir() else None


def load_source(model: str | None = None, adapter: str | None = None, megatron: str | None = None) -> Source:
    """Load the model to export in fp32. `adapter` (a PEFT folder) is merged into the base weights;
    `megatron` (a Megatron-Core checkpoint) is converted to HF through anemone-bridge first."""
    transformers = require("transformers", "uv pip install transformers", "exporting a model")
    if megatron is not None:
        if model is not None:
            raise AnemoneError("--megatron and --model both given: pass one source (the Megatron checkpoint or an HF folder)")
        folder = megatron_to_hf(Path(megatron).expanduser())
    else:
        if adapter is not None:
            a = Path(adapter).expanduser()
            if not (a / "adapter_config.json").is_file():
                raise AnemoneError(f"--adapter '{a}' has no adapter_config.json: give a PEFT adapter folder "
                                   "(as written by save_pretrained of a PeftModel)")
            if model is None:
                model = _adapter_base(a)  # the adapter's own base when it is a local folder, else the embedded model
        folder = resolve_model(model)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise AnemoneError(f"cannot load the model folder '{folder}' with transformers: {exc}. Give an HF "
                           "causal-LM folder (config.json, safetensors, tokenizer files)") from None
    desc = str(folder)
    if adapter is not None:
        peft = require("peft", "uv pip install peft", "merging a LoRA adapter")
        hf = peft.PeftModel.from_pretrained(hf, str(Path(adapter).expanduser())).merge_and_unload()
        desc += f" + adapter {adapter} (merged)"
        if (Path(adapter).expanduser() / "tokenizer_config.json").is_file():
            tok = transformers.AutoTokenizer.from_pretrained(Path(adapter).expanduser())
    return Source(hf.float().eval(), tok, folder, desc)


def megatron_to_hf(ckpt: Path) -> Path:
    """Convert a Megatron-Core checkpoint (as written by `anemone bridge import`) to a temporary HF folder with
    anemone-bridge (the optional extra `bridge`): any saved TP/PP/EP layout, read back in one process."""
    bridge = require("anemone_bridge", "uv pip install 'anemone-export[bridge]'", "exporting a Megatron checkpoint")
    if not ckpt.is_dir():
        raise AnemoneError(f"--megatron '{ckpt}' is not a folder: give a Megatron-Core checkpoint written by "
                           "`anemone bridge import`")
    out = Path(tempfile.mkdtemp(prefix="anemone-export-megatron-")) / "hf"
    bridge.export_ckpt(ckpt, out, quiet=True)
    return out
