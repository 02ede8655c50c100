"""Generation backends behind one interface: torch (CPU/GPU, in-process) and vLLM (GPU, `anemone-rl[vllm]`)."""

from anemone_rl.generation.base import Completion, GenerationBackend, SamplingParams
from anemone_rl.generation.torch_backend import TorchGenerator

__all__ = ["Completion", "GenerationBackend", "SamplingParams", "TorchGenerator"]
