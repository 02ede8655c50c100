"""Config -> objects: the run folder, the model (+ LoRA), the tokenized examples. Components take plain
arguments; only these builders read the config."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from anemone_automodel.config import AutoModelConfig
from anemone_automodel.data.sources import chunk_examples, detect_format, read_rows, tokenize_rows
from anemone_automodel.lora import apply_lora, fuse_lora_forward
from anemone_automodel.model import load_model, load_tokenizer
from anemone_core.errors import AnemoneError
from anemone_core.models import resolve_model


def _broadcast(value: Any) -> Any:
    import torch.distributed as dist

    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def build_run_dir(cfg: AutoModelConfig, rank: int) -> Path:
    """The run folder: chosen once on rank 0 (a UTC-stamped default), refused if it holds another run's
    outputs unless resuming or overwriting."""
    if cfg.output.dir is not None:
        run_dir = Path(cfg.output.dir).expanduser().absolute()
    else:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        run_dir = _broadcast(Path("runs/automodel").absolute() / f"{cfg.task}-{stamp}")
    if rank == 0:
        used = run_dir.is_dir() and any(run_dir.iterdir())
        if used and not cfg.checkpoint.resume:
            if not cfg.output.overwrite:
                raise AnemoneError(f"output.dir = {str(run_dir)!r} already holds a run: pass --overwrite "
                                   "(output.overwrite=true) to replace it, checkpoint.resume=true to continue it, "
                                   "or choose another output.dir")
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def build_model(cfg: AutoModelConfig, device: str) -> tuple[torch.nn.Module, Any, Path]:
    """(model in fp32 master weights on `device`, tokenizer, model folder). LoRA-wrapped when enabled."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = resolve_model(cfg.model.path)
    tokenizer = load_tokenizer(folder)
    torch.manual_seed(cfg.train.seed)
    if cfg.model.init == "scratch":
        hf_cfg = AutoConfig.from_pretrained(folder)
        for key, value in cfg.model.config_overrides.items():
            if not hasattr(hf_cfg, key):
                raise AnemoneError(f"model.config_overrides.{key}: {type(hf_cfg).__name__} has no field {key!r}: "
                                   "use a key of the model's config.json")
            setattr(hf_cfg, key, value)
        if hasattr(hf_cfg, "head_dim") and "hidden_size" in cfg.model.config_overrides:
            hf_cfg.head_dim = hf_cfg.hidden_size // hf_cfg.num_attention_heads
        model = AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.float32, attn_implementation="sdpa")
    else:
        model = load_model(folder, dtype=torch.float32)
    model.config.use_cache = False
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules)
        fuse_lora_forward(model)
    model.to(device)
    model.train()
    return model, tokenizer, folder


def build_examples(cfg: AutoModelConfig, tokenizer: Any) -> list[dict]:
    d = cfg.data
    if d.format == "megatron":
        from anemone_automodel.data.megatron import read_megatron_documents

        if d.path is None:
            raise AnemoneError("data.format = megatron needs data.path = the dataset prefix (without .bin/.idx)")
        return read_megatron_documents(d.path, d.seq_len, d.max_examples)
    fmt = d.format if (d.path is not None or d.format != "auto") else ("text" if cfg.task == "pretrain" else "auto")
    ds = read_rows(d.path, fmt, d.max_examples)
    if cfg.task == "pretrain" and detect_format(list(ds.column_names), fmt, d.text_field) == "text":
        # Pretraining keeps every token: long documents are cut into seq_len pieces, not truncated.
        return chunk_examples(tokenize_rows(tokenizer, ds, "text", None, d.text_field), d.seq_len)
    return tokenize_rows(tokenizer, ds, fmt, d.seq_len, d.text_field)
