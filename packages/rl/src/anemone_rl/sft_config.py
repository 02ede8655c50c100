"""`anemone rl sft` config."""

from __future__ import annotations

from pydantic import Field, model_validator

from anemone_core.config import AnemoneConfig
from anemone_rl.config import ModelConfig, OptimConfig, RunConfig


class SFTAlgoConfig(AnemoneConfig):
    steps: int = Field(20, ge=1)
    """Optimizer steps."""
    batch_size: int = Field(8, ge=1)
    """Conversations per optimizer step."""
    micro_batch_size: int = Field(4, ge=1)
    """Conversations per forward/backward; gradients accumulate over the batch."""
    max_length: int = Field(256, ge=8)
    """Conversations are right-truncated to this many tokens."""

    @model_validator(mode="after")
    def _divides(self) -> SFTAlgoConfig:
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size = {self.batch_size} does not split into micro_batch_size = "
                             f"{self.micro_batch_size}: choose micro_batch_size in "
                             f"{[d for d in range(1, self.batch_size + 1) if self.batch_size % d == 0]}")
        return self


class SFTDataConfig(AnemoneConfig):
    train: str = "arithmetic:train"
    """Rows with `messages` (chat) or `prompt`/`completion`, as .jsonl/.json/.parquet or a datasets folder;
    `arithmetic:train` = the shipped questions answered correctly."""
    eval: str | None = "arithmetic:test"
    """Held-out prompt rows with `answer`, scored by greedy generation and the math verifier (unset = none)."""
    eval_prompts: int = Field(32, ge=1)
    """How many held-out prompts to evaluate."""
    eval_max_new_tokens: int = Field(16, ge=1)
    """Generation cap for evaluation."""


class SFTConfig(AnemoneConfig):
    """Supervised fine-tuning on chat data (automodel's tokenization and loss), e.g. a warm-up before GRPO."""

    model: ModelConfig = ModelConfig()
    sft: SFTAlgoConfig = SFTAlgoConfig()
    optim: OptimConfig = OptimConfig(lr=2e-5)
    data: SFTDataConfig = SFTDataConfig()
    run: RunConfig = RunConfig(out="outputs/rl-sft")
