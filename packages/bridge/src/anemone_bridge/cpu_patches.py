"""The few places where megatron-core 0.16.1 assumes a CUDA device, made to work on a CPU-only host.

Everything here is applied by `apply_cpu_patches()`, idempotently, and only when no GPU is present: on a GPU
host megatron-core runs unmodified. Each patch names what breaks and why; `tests/test_bridge_cpu_patches.py`
has one test per patch showing the unpatched failure mode is gone.

Not a patch but part of the same story (handled where the model is built, see `model_builder.py`):
- `use_cpu_initialization=True` and `perform_initialization=False` so weights are allocated on the CPU;
- the fusions (masked softmax, bias-activation, bias-dropout, RoPE, gradient accumulation) are switched off,
  since they are CUDA kernels;
- an explicit causal attention mask is passed to `GPTModel.forward`, because the default one is built with
  `device="cuda"` in `megatron.core.transformer.utils.get_default_causal_mask`.
"""

from __future__ import annotations

import functools
import types

import torch

_APPLIED: set[str] = set()


def _eager_compile(model=None, **kwargs):
    """`torch.compile` as the identity: the function (or decorator) is returned unchanged."""
    return model if model is not None else (lambda fn: fn)


def import_megatron_eagerly() -> None:
    """Import megatron-core's model and checkpoint modules with `torch.compile` as the identity (CPU hosts).

    megatron-core's `jit_fuser` is `torch.compile` (megatron/core/jit.py), applied as a decorator at import
    time to fused kernels; each application imports TorchDynamo and Inductor, which costs more CPU time than
    a whole conversion of the embedded model (~2 s with bytecode cached, ~4 s without; see the README). On
    the CPU those kernels are switched off or run eagerly anyway. `torch.compile` is restored afterwards;
    megatron's `jit_fuser` stays the identity in this process. No-op with a GPU or once megatron is imported.
    """
    import sys

    if torch.cuda.is_available() or "megatron.core" in sys.modules:
        return
    original = torch.compile
    torch.compile = _eager_compile  # type: ignore[assignment]
    try:
        from megatron.core import dist_checkpointing, parallel_state  # noqa: F401
        from megatron.core.models.gpt import GPTModel  # noqa: F401
    finally:
        torch.compile = original


def _patch_rope_get_emb() -> None:
    # RotaryEmbedding.get_emb moves `inv_freq` to `torch.cuda.current_device()` on the first forward pass
    # ("move `inv_freq` to GPU once"), which raises on a host without a GPU. We keep it where it is.
    from megatron.core.models.common.embeddings import rotary_pos_embedding as rpe

    def get_emb(self, max_seq_len: int, offset: int = 0) -> torch.Tensor:
        freqs = self.get_freqs_non_repeated(max_seq_len, offset)  # (S, D/2)
        if not self.rotary_interleaved:
            emb = torch.cat((freqs, freqs), dim=-1)
        else:
            emb = torch.stack((freqs.view(-1, 1), freqs.view(-1, 1)), dim=-1).view(freqs.shape[0], -1)
        return emb[:, None, None, :]  # (S, 1, 1, D)

    rpe.RotaryEmbedding.get_emb = get_emb


def _patch_global_memory_buffer() -> None:
    # GlobalMemoryBuffer.get_tensor allocates its scratch buffer on `torch.cuda.current_device()`; the local
    # DotProductAttention asks it for the baddbmm output buffer on every forward pass.
    from megatron.core import utils

    def get_tensor(self, tensor_shape, dtype, name, mem_alloc_context=None):
        required = functools.reduce(lambda a, b: a * b, tensor_shape, 1)
        buf = self.buffer.get((name, dtype))
        if buf is None or buf.numel() < required:
            buf = self.buffer[(name, dtype)] = torch.empty(required, dtype=dtype, device="cpu")
        return buf[:required].view(*tensor_shape)

    utils.GlobalMemoryBuffer.get_tensor = get_tensor


def _patch_tied_embedding_sync() -> None:
    # With tied embeddings and PP > 1, LanguageModule.setup_embeddings_and_output_layer copies the first
    # stage's embedding to the last stage's output layer with `weight.data.cuda()` + all_reduce. We run the
    # same all_reduce on the CPU tensor (gloo).
    from megatron.core.models.common.language_module.language_module import LanguageModule

    original = LanguageModule.setup_embeddings_and_output_layer
    if getattr(original, "_anemone_cpu", False):
        return

    def setup_embeddings_and_output_layer(self) -> None:
        in_group = self._is_in_embd_group
        self._is_in_embd_group = lambda: False  # skip the CUDA copy inside the original
        try:
            original(self)
        finally:
            del self._is_in_embd_group
        pp = self.config.pipeline_model_parallel_size
        if (self.share_embeddings_and_output_weights and pp > 1 and torch.distributed.is_initialized()
                and in_group()):
            torch.distributed.all_reduce(self.shared_embedding_or_output_weight().data, group=self.embd_group)

    setup_embeddings_and_output_layer._anemone_cpu = True  # type: ignore[attr-defined]
    LanguageModule.setup_embeddings_and_output_layer = setup_embeddings_and_output_layer


def _patch_router_gating() -> None:
    # Router.gating moves the router weight to `torch.cuda.current_device()` when it finds it on the CPU
    # ("move weights to GPU"). We compute the same logits where the weight is, with a plain linear:
    # megatron's `router_gating_linear` refers to `te_general_gemm`, undefined without Transformer Engine.
    from megatron.core.transformer.moe import router

    def gating(self, input: torch.Tensor) -> torch.Tensor:
        router_dtype = {"fp32": torch.float32, "fp64": torch.float64}.get(self.config.moe_router_dtype, input.dtype)
        bias = None if self.bias is None else self.bias.to(router_dtype)
        return torch.nn.functional.linear(input.to(router_dtype), self.weight.to(router_dtype), bias)  # (S, B, E)

    router.Router.gating = gating


def _patch_first_dim_collectives() -> None:
    # The MoE all-gather token dispatcher (used with EP/TP > 1) gathers and reduce-scatters tokens along the
    # first dim into buffers made with `device=torch.cuda.current_device()`, through
    # `all_gather_into_tensor` / `reduce_scatter_tensor`. We use CPU buffers and the list forms gloo has
    # (gloo has no reduce_scatter: all_reduce, then keep this rank's slice).
    import torch.distributed as dist
    from megatron.core.tensor_parallel import mappings

    def gather_first(input_, group, output_split_sizes=None, use_global_buffer=False):
        n = group.size()
        if n == 1:
            return input_
        sizes = output_split_sizes or [input_.shape[0]] * n
        # gloo's all_gather wants equal sizes: pad every rank's rows to the largest, then trim
        most = max(sizes)
        padded = input_.new_zeros((most, *input_.shape[1:]))
        padded[: input_.shape[0]] = input_
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded, group=group)
        return torch.cat([p[:k] for p, k in zip(parts, sizes, strict=True)], 0)  # (sum(sizes), ...)

    def reduce_scatter_first(input_, group, input_split_sizes=None, use_global_buffer=False):
        n = group.size()
        if n == 1:
            return input_
        total = input_.clone()
        dist.all_reduce(total, group=group)
        sizes = input_split_sizes or [input_.shape[0] // n] * n
        return total.split(sizes, 0)[group.rank()].contiguous()

    mappings._gather_along_first_dim = gather_first
    mappings._reduce_scatter_along_first_dim = reduce_scatter_first


def _patch_sliding_window_mask() -> None:
    # The sliding-window attention mask (`window_size`, Mistral's sliding_window) is built with
    # `device="cuda"` in `transformer.utils.get_sliding_window_causal_mask`, which the unfused softmax calls
    # by the name it imported. The same mask on the CPU: True = hidden.
    from megatron.core.fusions import fused_softmax

    def get_sliding_window_causal_mask(sq: int, skv: int, window_size: tuple[int, int]) -> torch.Tensor:
        m = torch.ones(sq, skv, dtype=torch.bool)
        keep = torch.tril(torch.triu(m, diagonal=skv - sq - window_size[0]), diagonal=skv - sq + window_size[1])
        return ~keep  # (Sq, Skv)

    fused_softmax.get_sliding_window_causal_mask = get_sliding_window_causal_mask


class _CpuCuda:
    """`torch.cuda` as seen by a patched module: the current device is the CPU, synchronize is a no-op."""

    def __getattr__(self, name: str):
        return getattr(torch.cuda, name)

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def synchronize(*args, **kwargs) -> None:
        return None


class _CpuTorch(types.ModuleType):
    """`torch` for one megatron module, with `torch.cuda` replaced by `_CpuCuda` (everything else is torch)."""

    cuda = _CpuCuda()

    def __getattr__(self, name: str):
        return getattr(torch, name)


def _patch_dist_checkpointing_save() -> None:
    # dist_checkpointing's torch_dist save path calls `torch.cuda.synchronize()` after staging tensors to the
    # host (filesystem_async.preload_tensors) and broadcasts its failure flag in a tensor made on
    # `torch.cuda.current_device()` (state_dict_saver.save_state_dict_async_finalize). Those two modules see
    # a `torch` whose `cuda` puts tensors on the CPU and synchronizes nothing.
    from megatron.core.dist_checkpointing.strategies import filesystem_async, state_dict_saver

    for module in (filesystem_async, state_dict_saver):
        module.torch = _CpuTorch("torch")


def _init_rng_tracker() -> None:
    # Attention dropout forks the CUDA RNG tracker (`get_cuda_rng_tracker().fork()`), whose training
    # variant saves and restores CUDA RNG state. The inference tracker forks into a no-op; we only run
    # forward passes for conversion and verification, with dropout off.
    from megatron.core.tensor_parallel.random import initialize_rng_tracker

    initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)


PATCHES = {
    "rope_get_emb": _patch_rope_get_emb,
    "global_memory_buffer": _patch_global_memory_buffer,
    "tied_embedding_sync": _patch_tied_embedding_sync,
    "router_gating": _patch_router_gating,
    "first_dim_collectives": _patch_first_dim_collectives,
    "dist_checkpointing_save": _patch_dist_checkpointing_save,
    "sliding_window_mask": _patch_sliding_window_mask,
}


def apply_cpu_patches(force: bool = False) -> list[str]:
    """Apply every CPU patch once (only without a GPU, unless `force`). Returns the names applied now."""
    if torch.cuda.is_available() and not force:
        return []
    done = []
    for name, patch in PATCHES.items():
        if name not in _APPLIED:
            patch()
            _APPLIED.add(name)
            done.append(name)
    _init_rng_tracker()
    return done
