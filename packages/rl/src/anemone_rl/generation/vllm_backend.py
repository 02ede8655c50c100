"""The vLLM generation backend (GPU, `anemone-rl[vllm]`), behind the same interface as `TorchGenerator`.

Weights are refit into the running engine through a worker extension (vLLM's RLHF pattern): the policy's
HF-named tensors go to every vLLM worker by `collective_rpc`, which calls the model's own `load_weights`
(it knows how to fuse q/k/v and gate/up), so no engine restart and no checkpoint round trip.
Logprobs are requested for the sampled token only (`logprobs=0`), taken from the raw model distribution
at the sampling temperature (`logprobs_mode="processed_logprobs"` would include top-p/top-k).
"""

from __future__ import annotations

from typing import Any

import torch

from anemone_core.errors import require
from anemone_rl.generation.base import Completion, SamplingParams


class WeightSyncExtension:
    """Mixed into vLLM's GPU worker (`worker_extension_cls`); `self` is the worker."""

    def load_hf_weights(self, named: list[tuple[str, torch.Tensor]]) -> int:
        device = next(self.model_runner.model.parameters()).device  # type: ignore[attr-defined]
        self.model_runner.model.load_weights(weights=[(n, t.to(device)) for n, t in named])  # type: ignore[attr-defined]
        return len(named)


class VLLMGenerator:
    """`GenerationBackend` on a vLLM engine in this process (one GPU; tensor_parallel_size for more)."""

    def __init__(self, model_path: str | None, tokenizer: Any = None, dtype: str = "auto",
                 gpu_memory_utilization: float = 0.5, tensor_parallel_size: int = 1, max_model_len: int = 4096,
                 seed: int = 0) -> None:
        vllm = require("vllm", "uv pip install 'anemone-rl[vllm]'", "the vLLM generation backend")
        from anemone_core.models import resolve_model

        self.tokenizer = tokenizer
        self.llm = vllm.LLM(
            model=str(resolve_model(model_path)), dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len, seed=seed,
            worker_extension_cls="anemone_rl.generation.vllm_backend.WeightSyncExtension",
            enable_prefix_caching=True,
        )
        self._vllm = vllm

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        sp = self._vllm.SamplingParams(
            n=1, max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1, stop=list(params.stop) or None,
            stop_token_ids=list(params.stop_token_ids) or None, ignore_eos=params.ignore_eos, logprobs=0,
            seed=params.seed, include_stop_str_in_output=True,
        )
        inputs = [{"prompt_token_ids": p} for p in prompts]
        results = self.llm.generate(inputs, sp, use_tqdm=False)
        outs = []
        for res in results:
            o = res.outputs[0]
            lps = [float(step[tok].logprob) for tok, step in zip(o.token_ids, o.logprobs or [], strict=False)]
            reason = "length" if o.finish_reason == "length" else ("stop" if o.stop_reason is not None else "eos")
            outs.append(Completion(list(o.token_ids), lps, reason, o.text))
        return outs

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.llm.collective_rpc("load_hf_weights", args=(list(state_dict.items()),))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
