"""Final outputs: the consolidated Hugging Face folder, the PEFT adapter and the merged LoRA folder.

Full training: every rank writes the shards it holds (DCP's Hugging Face safetensors writer), then every
rank consolidates a subset of the output files (`consolidate_safetensors_files_on_every_rank`); rank 0 only
writes the index, config and tokenizer. No rank ever holds the whole model. The folder is assembled under a
temporary name and renamed into place by rank 0, so it appears whole or not at all.

LoRA: the (small) adapter tensors are gathered to rank 0 and saved in PEFT's format; the merged folder
W + (alpha / r) * B @ A is computed from a full state dict gathered to rank 0 (CPU offloaded).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from anemone_core.checkpoint import copy_tokenizer_files, save_hf_folder
from anemone_core.errors import AnemoneError


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def quiet_single_process() -> Iterator[None]:
    """DCP warns that it runs in a single process when there is no process group: that is intended here."""
    log = logging.getLogger("torch.distributed.checkpoint._consolidate_hf_safetensors")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assuming the intent is to save in a single process.*")
            warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")
            yield
    finally:
        log.setLevel(level)


def assign_files(shapes: dict[str, tuple[int, torch.dtype]], n_files: int) -> dict[str, int]:
    """Spread tensors over `n_files` files (1-based indices) in name order, balancing bytes greedily."""
    sizes = {k: math.prod(s) * torch.empty((), dtype=d).element_size() for k, (s, d) in shapes.items()}
    target = sum(sizes.values()) / n_files
    mapping, idx, acc = {}, 1, 0.0
    for name in sorted(sizes):
        if acc >= target * idx and idx < n_files:
            idx += 1
        mapping[name] = idx
        acc += sizes[name]
    return mapping


def _hf_config(model: Any) -> dict[str, Any]:
    cfg = model.config.to_dict()
    cfg["dtype"] = "float32"
    cfg.pop("torch_dtype", None)
    return cfg


def save_consolidated(model: torch.nn.Module, out: Path, tokenizer_dir: Path, max_shard_bytes: int) -> Path:
    """Write `model` (plain, FSDP2 and/or TP sharded) as an HF folder at `out`, every rank writing its part."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter
    from torch.distributed.checkpoint._consolidate_hf_safetensors import (
        consolidate_safetensors_files_on_every_rank,
    )
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    rank, world = _dist()
    sd = get_model_state_dict(model)
    if getattr(model.config, "tie_word_embeddings", False):
        sd.pop("lm_head.weight", None)  # tied to embed_tokens: transformers re-ties it on load
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in sd.items()}
    total = sum(math.prod(s) * torch.empty((), dtype=d).element_size() for s, d in shapes.values())
    n_files = max(world, math.ceil(total / max_shard_bytes))
    mapping = assign_files(shapes, min(n_files, len(shapes)))
    tmp = out.with_name(f".{out.name}.partial")
    if rank == 0:
        if out.exists():
            raise AnemoneError(f"output folder {out} already exists: choose another output.dir or pass --overwrite")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    writer = HuggingFaceStorageWriter(str(tmp / "sharded"), fqn_to_index_mapping=mapping, save_distributed=True)
    with quiet_single_process():
        dcp.save(sd, storage_writer=writer)
        _barrier()
        consolidate_safetensors_files_on_every_rank(str(tmp / "sharded"), str(tmp), mapping)
    if rank == 0:
        shutil.rmtree(tmp / "sharded")
        if max(mapping.values()) == 1:  # one file: the plain name transformers expects without an index
            os.replace(tmp / "model-00001-of-00001.safetensors", tmp / "model.safetensors")
            (tmp / "model.safetensors.index.json").unlink(missing_ok=True)
        (tmp / "config.json").write_text(json.dumps(_hf_config(model), indent=2, sort_keys=True) + "\n")
        copy_tokenizer_files(tokenizer_dir, tmp)
        os.replace(tmp, out)
    _barrier()
    return out


def _full_state_dict(model: torch.nn.Module, trainable_only: bool) -> dict[str, torch.Tensor]:
    """Full (unsharded) tensors on rank 0, CPU; empty on other ranks."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trainable_only)
    return get_model_state_dict(model, options=opts)


def save_adapter(peft_model: Any, out: Path) -> Path:
    """The LoRA adapter in PEFT's format (adapter_config.json + adapter_model.safetensors), rank 0 writes."""
    sd = _full_state_dict(peft_model, trainable_only=True)
    if _dist()[0] == 0:
        if out.exists():
            raise AnemoneError(f"adapter folder {out} already exists: choose another output.dir or pass --overwrite")
        tmp = out.with_name(f".{out.name}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        peft_model.save_pretrained(str(tmp), state_dict=sd, safe_serialization=True)
        os.replace(tmp, out)
    _barrier()
    return out


def merge_lora_state_dict(sd: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """peft names -> HF names with W + scale * B @ A folded in (one adapter, named 'default')."""
    out: dict[str, torch.Tensor] = {}
    for name, t in sd.items():
        if ".lora_" in name:
            continue
        hf = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        if name.endswith(".base_layer.weight"):
            stem = name.removesuffix(".base_layer.weight")
            a, b = sd[f"{stem}.lora_A.default.weight"], sd[f"{stem}.lora_B.default.weight"]  # (r, in), (out, r)
            t = t + scale * (b.float() @ a.float()).to(t.dtype)  # (out, in)
        out[hf] = t
    return out


def save_merged(peft_model: Any, out: Path, tokenizer_dir: Path, max_shard_bytes: int) -> Path:
    """Merged plain HF folder (rank 0 writes; the full model is gathered there)."""
    cfg = peft_model.peft_config["default"]
    scale = cfg.lora_alpha / cfg.r
    sd = _full_state_dict(peft_model, trainable_only=False)
    if _dist()[0] == 0:
        merged = merge_lora_state_dict(sd, scale)
        base = peft_model.get_base_model()
        if getattr(base.config, "tie_word_embeddings", False):
            merged.pop("lm_head.weight", None)
        save_hf_folder(merged, out, config=_hf_config(base), tokenizer_from=tokenizer_dir,
                       max_shard_bytes=max_shard_bytes)
    _barrier()
    return out
