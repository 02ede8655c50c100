"""Checkpoints: sharded DCP training state (resume) and the final Hugging Face / PEFT folders.

Training state, one folder per step (`<run>/checkpoints/step-000010/`):
  - DCP shards of the model's trainable weights and the optimizer (every rank writes its own part),
  - `trainer_state.json`: step, scheduler and data position, the model fingerprint,
  - `rng-rank<r>.safetensors`: each rank's RNG states (tensors, never pickled).
A checkpoint is written into `step-N.tmp` and renamed by rank 0 once every rank is done, so a kill during
a save leaves the previous checkpoint as the latest one.

DCP keeps its own `.metadata` file, which torch reads with pickle: only resume from run folders you wrote.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from anemone_automodel.outputs import quiet_single_process
from anemone_core.errors import AnemoneError
from anemone_core.io import atomic_write_text

STATE = "trainer_state.json"


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


def _state_dict_options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # Frozen base weights (LoRA) are not part of the training state: they are reloaded from model.path,
    # hence non-strict loading (the trainable names and shapes are checked by the fingerprint).
    return StateDictOptions(ignore_frozen_params=True, strict=False)


def fingerprint(model: torch.nn.Module, model_path: str) -> dict[str, Any]:
    """What a checkpoint must agree with to be resumed: architecture and trainable tensor names and shapes."""
    cfg = getattr(model, "config", None)
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    trainable = {n: list(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    return {"model_path": model_path, "config": {k: getattr(cfg, k, None) for k in keys},
            "trainable_tensors": len(trainable),
            "trainable_numel": sum(int(torch.Size(s).numel()) for s in trainable.values())}


def save_train_state(ckpt_root: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: Any, loader_state: dict, info: dict[str, Any], keep: int = 2) -> Path:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    final = ckpt_root / f"step-{step:06d}"
    tmp = ckpt_root / f"step-{step:06d}.tmp"
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    msd, osd = get_state_dict(model, optimizer, options=_state_dict_options())
    with quiet_single_process():
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(tmp / f"rng-rank{_rank()}.safetensors"))
    if _rank() == 0:
        state = {"step": step, "scheduler": scheduler.state_dict(), "data": loader_state} | info
        atomic_write_text(tmp / STATE, json.dumps(state, indent=2, default=str))
    _barrier()
    if _rank() == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(ckpt_root.glob("step-[0-9]*[0-9]"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    done = [p for p in sorted(ckpt_root.glob("step-[0-9]*[0-9]")) if (p / STATE).is_file()]
    return done[-1] if done else None


def read_train_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / STATE).read_text())


def check_resumable(state: dict[str, Any], info: dict[str, Any], ckpt: Path) -> None:
    """Refuse a checkpoint written for another model or layout, naming what differs and the fix."""
    old, new = state.get("fingerprint", {}), info["fingerprint"]
    if old.get("config") != new["config"] or old.get("trainable_numel") != new["trainable_numel"]:
        raise AnemoneError(
            f"checkpoint {ckpt} was written for model {old.get('model_path')!r} ({old.get('config')}, "
            f"{old.get('trainable_numel')} trainable weights) but this run has {new['model_path']!r} "
            f"({new['config']}, {new['trainable_numel']} trainable weights): resume with the same model.path and "
            "lora settings, or start a new run with another output.dir"
        )
    if state.get("units_per_step") != info["units_per_step"]:
        raise AnemoneError(
            f"checkpoint {ckpt} took {state.get('units_per_step')} examples per step but this run takes "
            f"{info['units_per_step']} (micro_batch_size x grad_accum x dp): keep the global batch when resuming"
        )


def load_train_state(ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict:
    """Load model, optimizer, scheduler and RNG in place; returns the trainer state (step, data position)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    state = read_train_state(ckpt)
    msd, osd = get_state_dict(model, optimizer, options=_state_dict_options())
    both = {"model": msd, "optim": osd}
    with quiet_single_process():
        dcp.load(both, checkpoint_id=str(ckpt))
    set_state_dict(model, optimizer, model_state_dict=both["model"], optim_state_dict=both["optim"],
                   options=_state_dict_options())
    scheduler.load_state_dict(state["scheduler"])
    rng_file = ckpt / f"rng-rank{_rank()}.safetensors"
    if rng_file.is_file():
        rng = load_file(str(rng_file))
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return state
