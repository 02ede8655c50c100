"""`anemone rl dpo` config."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from anemone_core.config import AnemoneConfig
from anemone_rl.config import ModelConfig, OptimConfig, RunConfig


class DPOAlgoConfig(AnemoneConfig):
    steps: int = Field(6, ge=1)
    """Optimizer steps."""
    batch_size: int = Field(4, ge=1)
    """Preference pairs per optimizer step."""
    micro_batch_size: int = Field(4, ge=1)
    """Pairs per forward/backward (2x sequences); gradients accumulate over the batch."""
    beta: float = Field(0.1, gt=0)
    """Strength of the implicit KL to the reference: higher stays closer."""
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid"
    """sigmoid = DPO; ipo = IPO (on length-averaged logprobs)."""
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    """Assumed label noise (conservative DPO); 0 = plain DPO."""
    sft_weight: float = Field(0.0, ge=0)
    """Weight of an NLL term on the chosen responses (RPO-style); 0 = off."""
    max_length: int = Field(256, ge=8)
    """Pairs whose chosen or rejected conversation is longer (in tokens) are dropped."""
    share_prompt_forward: bool = True
    """Run each pair's common prompt once and both answers on its KV cache (policy and reference; the same
    logprobs and gradients to float rounding; the policy's forward stays plain when sft_weight > 0)."""

    @model_validator(mode="after")
    def _divides(self) -> DPOAlgoConfig:
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size = {self.batch_size} does not split into micro_batch_size = "
                             f"{self.micro_batch_size}: choose micro_batch_size in "
                             f"{[d for d in range(1, self.batch_size + 1) if self.batch_size % d == 0]}")
        return self


class DPODataConfig(AnemoneConfig):
    train: str = "arithmetic:train"
    """Preference rows (`prompt`/`chosen`/`rejected`, plain or chat form) as .jsonl/.json/.parquet or a datasets
    folder; `arithmetic:train` pairs each shipped question's answer (chosen) with a nearby wrong one."""
    eval: str | None = "arithmetic:test"
    """Held-out preference rows (unset = no evaluation)."""
    eval_pairs: int = Field(16, ge=1)
    """How many held-out pairs to evaluate (the first N)."""
    eval_every: int = Field(0, ge=0)
    """Evaluate every N steps (0 = only before and after training)."""
    pairs_per_question: int = Field(1, ge=1, le=6)
    """Training pairs per question of the built-in arithmetic task, each rejecting a different nearby wrong
    answer (+-1, +-2, +-10); the held-out pairs stay one per question."""

    @model_validator(mode="after")
    def _builtin_only(self) -> DPODataConfig:
        if self.pairs_per_question > 1 and self.train.split(":")[0] != "arithmetic":
            raise ValueError(f"pairs_per_question = {self.pairs_per_question} builds pairs from the built-in "
                             f"arithmetic task, but train = {self.train!r} is a file of ready pairs: set "
                             f"data.pairs_per_question=1 or data.train=arithmetic:train")
        return self


class DPOConfig(AnemoneConfig):
    """DPO: raise the policy's likelihood of chosen over rejected responses, relative to a frozen reference."""

    model: ModelConfig = ModelConfig()
    dpo: DPOAlgoConfig = DPOAlgoConfig()
    optim: OptimConfig = OptimConfig(lr=5e-6)
    data: DPODataConfig = DPODataConfig()
    run: RunConfig = RunConfig(out="outputs/rl-dpo")
