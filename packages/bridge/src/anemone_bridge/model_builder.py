"""HF config -> megatron-core `TransformerConfig` -> `GPTModel` (local spec on CPU, TE spec with the extra).

Also the checks that must fail before any work starts (TP/PP/EP against heads, layers and experts) and the
pipeline-aware forward pass used by `verify`.
"""

from __future__ import annotations

from typing import Any

import torch

from anemone_bridge.architectures import ArchBridge
from anemone_bridge.mapping import Geometry
from anemone_core.errors import AnemoneError

VOCAB_DIVISOR = 128  # Megatron's make_vocab_size_divisible_by default, times TP


def rope_params(hf_config: Any) -> dict[str, Any]:
    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    if "rope_theta" not in params:
        params["rope_theta"] = float(getattr(hf_config, "rope_theta", 10000.0))
    params.setdefault("rope_type", "default")
    return params


def head_dim(hf_config: Any) -> int:
    return int(getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads)


def padded_vocab(vocab_size: int, tp: int) -> int:
    multiple = VOCAB_DIVISOR * tp
    return -(-vocab_size // multiple) * multiple


def geometry(hf_config: Any, tp: int, padded_vocab_size: int | None = None) -> Geometry:
    """Shape facts for the transforms; `padded_vocab_size` pins the padding a checkpoint was saved with."""
    return Geometry(
        num_heads=hf_config.num_attention_heads,
        num_kv_heads=getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads,
        head_dim=head_dim(hf_config), vocab_size=hf_config.vocab_size,
        padded_vocab_size=padded_vocab_size or padded_vocab(hf_config.vocab_size, tp),
    )


def check_layout(arch: ArchBridge, hf_config: Any, tp: int, pp: int, ep: int) -> None:
    """Every problem with tp/pp/ep for this model, with the valid values (before any process starts)."""
    from anemone_core.parallel import ParallelDims

    for name, value in (("tp", tp), ("pp", pp), ("ep", ep)):
        if not isinstance(value, int) or value < 1:
            raise AnemoneError(f"--{name} {value!r} is invalid: every parallel size is an integer >= 1")
    ParallelDims(dp=None, tp=tp, pp=pp, ep=ep).check_model(
        hf_config.num_attention_heads, getattr(hf_config, "num_key_value_heads", None),
        hf_config.num_hidden_layers, arch.num_experts(hf_config) or None,
    )
    rope = rope_params(hf_config)
    if rope["rope_type"] not in ("default", "llama3", "linear"):
        raise AnemoneError(f"rope_parameters.rope_type={rope['rope_type']!r} in config.json is not supported: "
                           "anemone-bridge converts default, linear and llama3 RoPE")


def transformer_config(arch: ArchBridge, hf_config: Any, tp: int = 1, pp: int = 1, ep: int = 1,
                       dtype: torch.dtype = torch.float32):
    """The megatron-core TransformerConfig for an HF config at a parallel layout."""
    import torch.nn.functional as F
    from megatron.core.transformer.transformer_config import TransformerConfig

    cpu = not torch.cuda.is_available()
    kw: dict[str, Any] = dict(
        num_layers=hf_config.num_hidden_layers, hidden_size=hf_config.hidden_size,
        num_attention_heads=hf_config.num_attention_heads,
        num_query_groups=getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads,
        kv_channels=head_dim(hf_config), ffn_hidden_size=hf_config.intermediate_size,
        normalization="RMSNorm", layernorm_epsilon=hf_config.rms_norm_eps, gated_linear_unit=True,
        activation_func=F.silu, add_bias_linear=False, add_qkv_bias=arch.qkv_bias, qk_layernorm=arch.qk_norm,
        hidden_dropout=0.0, attention_dropout=0.0, attention_softmax_in_fp32=True,
        # CUDA kernels: off on a CPU host (see cpu_patches.py)
        bias_activation_fusion=not cpu, masked_softmax_fusion=not cpu, apply_rope_fusion=False,
        bias_dropout_fusion=not cpu, gradient_accumulation_fusion=False, persist_layer_norm=False,
        use_cpu_initialization=True, perform_initialization=False,  # every weight is loaded afterwards
        params_dtype=dtype, pipeline_dtype=dtype,
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, expert_model_parallel_size=ep,
        **sliding_window_kwargs(hf_config),
    )
    if arch.moe:
        kw.update(
            num_moe_experts=arch.num_experts(hf_config), moe_router_topk=hf_config.num_experts_per_tok,
            moe_ffn_hidden_size=getattr(hf_config, arch.moe_ffn_key),
            # top-k over logits then softmax over the k == HF's softmax, top-k, renormalize (Mixtral; Qwen3-MoE
            # with norm_topk_prob); softmax over all then top-k == HF without renormalizing
            moe_router_pre_softmax=not getattr(hf_config, "norm_topk_prob", True), moe_router_load_balancing_type="none", moe_aux_loss_coeff=0.0,
            moe_token_dispatcher_type="allgather" if cpu else "alltoall",  # alltoall makes CUDA streams
            moe_grouped_gemm=False,
        )
    return TransformerConfig(**kw)


def sliding_window_kwargs(hf_config: Any) -> dict[str, Any]:
    """megatron's `window_size` (and which layers use it) for an HF sliding window of W tokens.

    HF lets position i attend to keys in (i - W, i] (W keys, itself included); megatron's window (left, right)
    keeps keys in [i - left, i + right], so W maps to (W - 1, 0). Per-layer types (Qwen's max_window_layers,
    transformers' `layer_types`) map to `window_attn_skip_freq` as a list, 1 = sliding-window layer.
    """
    window = getattr(hf_config, "sliding_window", None)
    if window is None:
        return {}
    if not isinstance(window, int) or window < 1:
        raise AnemoneError(f"config.json sliding_window={window!r} is invalid: use a positive number of tokens "
                           "or null for full attention")
    kw: dict[str, Any] = {"window_size": (window - 1, 0)}
    layers = getattr(hf_config, "layer_types", None)
    if layers:
        unknown = sorted(set(layers) - {"sliding_attention", "full_attention"})
        if unknown:
            raise AnemoneError(f"config.json layer_types holds {unknown}: anemone-bridge converts "
                               "'sliding_attention' and 'full_attention' layers only")
        pattern = [int(t == "sliding_attention") for t in layers]
        if not any(pattern):
            return {}
        if not all(pattern):
            kw["window_attn_skip_freq"] = pattern
    return kw


def layer_spec(arch: ArchBridge, config: Any, use_te: bool | None = None):
    from megatron.core.models.gpt import gpt_layer_specs as specs

    if use_te is None:
        use_te = torch.cuda.is_available() and _has_te()
    num_experts = config.num_moe_experts if arch.moe else None
    if use_te:
        return specs.get_gpt_layer_with_transformer_engine_spec(num_experts=num_experts, qk_layernorm=arch.qk_norm)
    return specs.get_gpt_layer_local_spec(num_experts=num_experts, qk_layernorm=arch.qk_norm,
                                          normalization="RMSNorm")


def _has_te() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        return False
    return True


def hf_inv_freq(hf_config: Any) -> torch.Tensor:
    """The RoPE inverse frequencies exactly as transformers computes them (incl. llama3/linear scaling)."""
    rope = rope_params(hf_config)
    dim = head_dim(hf_config)
    if rope["rope_type"] == "default":
        return 1.0 / (rope["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    tf_config = hf_config.transformers() if hasattr(hf_config, "transformers") else hf_config
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope["rope_type"]](tf_config, "cpu")
    assert scaling == 1.0, "only RoPE types without attention scaling are accepted by check_layout"
    return inv_freq.float()


def build_gpt_model(arch: ArchBridge, hf_config: Any, tp: int, pp: int, ep: int,
                    dtype: torch.dtype = torch.float32, padded_vocab_size: int | None = None, meta: bool = False):
    """This rank's part of the model. megatron-core's parallel state must be initialized at (tp, pp, ep).

    Parameters are allocated uninitialized (`perform_initialization=False`: every weight is loaded afterwards,
    and untouched pages cost no memory); `meta=True` builds on the meta device (shapes and checkpoint keys
    only, no storage), as the streaming export does."""
    import contextlib

    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt import GPTModel

    config = transformer_config(arch, hf_config, tp, pp, ep, dtype)
    tied = bool(getattr(hf_config, "tie_word_embeddings", False))
    with torch.device("meta") if meta else contextlib.nullcontext():
        model = GPTModel(
            config=config, transformer_layer_spec=layer_spec(arch, config),
            vocab_size=geometry(hf_config, tp, padded_vocab_size).padded_vocab_size,
            max_sequence_length=hf_config.max_position_embeddings,
            pre_process=ps.is_pipeline_first_stage(), post_process=ps.is_pipeline_last_stage(),
            share_embeddings_and_output_weights=tied, position_embedding_type="rope",
            rotary_base=int(rope_params(hf_config)["rope_theta"]), parallel_output=True,
        )
    # megatron only knows Llama-3.1's fixed scaling constants; take transformers' frequencies instead.
    model.rotary_pos_emb.inv_freq = hf_inv_freq(hf_config)
    if torch.cuda.is_available() and not meta:
        model = model.cuda()  # built on the CPU (use_cpu_initialization), run where megatron expects it
    return model.eval()


@torch.no_grad()
def forward_logits(model: Any, input_ids: torch.Tensor, vocab_size: int) -> torch.Tensor | None:
    """Run a (pipeline- and tensor-parallel) GPTModel on `input_ids` (B, S); full logits (B, S, V) on global
    rank 0, None elsewhere. Stages hand activations (S, B, H) to the next stage point to point."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    from anemone_bridge.runtime import comm_device

    dev = comm_device()
    b, s = input_ids.shape
    input_ids = input_ids.to(dev)
    position_ids = torch.arange(s, device=dev).unsqueeze(0).expand(b, s)
    mask = torch.triu(torch.ones(s, s, dtype=torch.bool, device=dev), diagonal=1)[None, None]  # (1,1,S,S) True=hidden
    pp, pp_rank = ps.get_pipeline_model_parallel_world_size(), ps.get_pipeline_model_parallel_rank()
    cfg = model.config
    if pp_rank > 0:
        hidden = torch.empty(s, b, cfg.hidden_size, dtype=cfg.params_dtype, device=dev)
        dist.recv(hidden, src=ps.get_pipeline_model_parallel_prev_rank())
        model.set_input_tensor(hidden)
    out = model(input_ids, position_ids, mask)
    if pp_rank < pp - 1:
        dist.send(out.contiguous(), dst=ps.get_pipeline_model_parallel_next_rank())
        result = None
    else:
        # out: (B, S, V_pad / tp), vocab-parallel: gather across TP (gloo has no all_gather_into_tensor)
        tp_group = ps.get_tensor_model_parallel_group()
        parts = [torch.empty_like(out) for _ in range(ps.get_tensor_model_parallel_world_size())]
        dist.all_gather(parts, out.contiguous(), group=tp_group)
        result = torch.cat(parts, -1)[..., :vocab_size]  # (B, S, V)
    # the logits live on the last stage's first TP rank; bring them to global rank 0
    last_stage_tp0 = _last_stage_source_rank()
    shape = (b, s, vocab_size)
    from anemone_bridge.runtime import send_to

    keep = result if dist.get_rank() == last_stage_tp0 else None
    return send_to(keep, last_stage_tp0, 0, shape, cfg.params_dtype)  # type: ignore[arg-type]


def _last_stage_source_rank() -> int:
    """The global rank of (pp = last, tp = 0, dp = 0): all ranks agree on it."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    from anemone_bridge.runtime import comm_device

    me = torch.tensor([dist.get_rank() if (ps.is_pipeline_last_stage() and ps.get_tensor_model_parallel_rank() == 0
                                           and ps.get_data_parallel_rank() == 0) else -1], device=comm_device())
    dist.all_reduce(me, op=dist.ReduceOp.MAX)
    return int(me.item())
