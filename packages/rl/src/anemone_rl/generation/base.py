"""The generation interface every backend implements: token ids in, token ids + logprobs out.

Logprobs are those of the sampled token under softmax(logits / temperature) over the full vocabulary (before
top-k/top-p truncation), the same quantity the trainer recomputes with `token_logprobs(..., temperature)`, so
the generator/trainer mismatch metric compares like with like. With temperature 0 (greedy) they are taken
at temperature 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch

FinishReason = Literal["eos", "stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 64
    """New tokens to generate at most per prompt."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (1 = off)."""
    top_k: int = 0
    """Keep the k most likely tokens (0 = off)."""
    stop: tuple[str, ...] = ()
    """Stop when the decoded response contains one of these strings (kept in the output)."""
    stop_token_ids: tuple[int, ...] = ()
    """Extra token ids that end a response besides the tokenizer's EOS."""
    ignore_eos: bool = False
    """Generate exactly max_tokens (benchmarks)."""
    seed: int | None = None
    """Seed of the sampler's generator; None draws from torch's global generator."""

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens={self.max_tokens}: use a value >= 1")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature}: use a value >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p}: use a value in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k}: use a value >= 0 (0 = off)")


@dataclass
class Completion:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason
    text: str | None = None
    extra: dict = field(default_factory=dict)


class GenerationBackend(Protocol):
    """What the GRPO loop needs from a generator, on CPU (torch) or GPU (vLLM)."""

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]: ...

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Refit: copy the policy's new weights (HF names) into the running generator."""
        ...
