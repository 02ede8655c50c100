"""Load a Hugging Face causal LM and its tokenizer from a local folder (never from a hub)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from anemone_core.errors import AnemoneError
from anemone_core.models import resolve_model

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device | None = None) -> torch.dtype:
    """`None`/"auto" -> bf16 on GPU, fp32 on CPU (CPU bf16 matmuls are slow and lossy for training)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        dev = torch.device(device) if device is not None else None
        return torch.bfloat16 if dev is not None and dev.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise AnemoneError(f"dtype = {dtype!r} is not one of {sorted(DTYPES)} or 'auto': pick one of them")
    return DTYPES[dtype]


def load_model(path: str | Path | None = None, dtype: str | torch.dtype | None = None,
               device: str | torch.device | None = None) -> Any:
    """A `transformers` causal LM from a local HF folder (None -> the embedded SmolLM2-135M-Instruct).

    Attention is SDPA; weights are loaded in `dtype` (default fp32 on CPU, bf16 on GPU) onto `device`.
    """
    from transformers import AutoModelForCausalLM

    folder = resolve_model(str(path) if path is not None else None)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, attn_implementation="sdpa")
    except (ValueError, KeyError) as exc:
        raise AnemoneError(f"model = {str(folder)!r} could not be loaded as a causal LM ({exc}): "
                           "point model.path at a Hugging Face causal-LM folder") from exc
    if device is not None:
        model.to(device)
    return model


def load_tokenizer(path: str | Path | None = None) -> Any:
    """The tokenizer saved beside the model; a pad token is set to EOS when the folder defines none."""
    from transformers import AutoTokenizer

    folder = resolve_model(str(path) if path is not None else None)
    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def sparse_tied_embedding_grad(model: Any) -> bool:
    """With tied input/output embeddings, have the input lookup hand back its gradient as sparse rows.

    The tied matrix then gets the head's dense gradient plus the rows of the tokens in the batch, instead of
    a second dense (vocab, hidden) gradient that is mostly zeros, then a dense sum (SmolLM2: 113 MB each,
    ~0.08 CPU-s a step). The summed gradient is dense, so the optimizer is unchanged. Only on plain tensors
    (not FSDP/TP shards) and only when the matrix is trained and shared; returns whether it was switched on.
    """
    from torch.distributed.tensor import DTensor

    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    tied = out is not None and isinstance(inp, torch.nn.Embedding) and inp.weight is out.weight
    if not tied or not inp.weight.requires_grad or isinstance(inp.weight, DTensor):
        return False
    inp.sparse = True
    return True
