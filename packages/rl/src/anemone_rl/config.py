"""Config sections shared by `anemone rl sft | dpo | grpo` (each trainer's own section lives beside it)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from anemone_core.config import AnemoneConfig


class ModelConfig(AnemoneConfig):
    path: str | None = None
    """Hugging Face model folder to start from; unset = the embedded SmolLM2-135M-Instruct."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Weights dtype: auto = fp32 on CPU, bf16 on GPU."""


class OptimConfig(AnemoneConfig):
    lr: float = Field(1e-5, gt=0)
    """Peak learning rate of AdamW."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay (matrices only)."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up steps before the cosine decay."""
    min_lr_ratio: float = Field(1.0, ge=0, le=1)
    """Final learning rate as a fraction of the peak (1 = constant after warm-up)."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient clipping by global norm."""


class RunConfig(AnemoneConfig):
    out: str = "outputs/rl"
    """Run folder: config.yaml, metrics.jsonl, checkpoints/ and the final model/ (HF folder)."""
    overwrite: bool = False
    """Start afresh in an existing run folder, deleting it (otherwise an existing run is resumed)."""
    seed: int = 0
    """Seed of data order, sampling and initialization: a run is a function of (config, seed)."""
    checkpoint_every: int = Field(0, ge=0)
    """Save a resumable checkpoint every N steps (0 = only at the end)."""
    keep_checkpoints: int = Field(2, ge=1)
    """How many of the latest checkpoints to keep."""
    threads: int = Field(0, ge=0)
    """torch threads per process (0 = torch's default)."""
    progress: bool = True
    """Show a progress bar on stderr."""
