"""A causal LM as a pure function of explicit KV-cache tensors: the one step function that the ONNX
exporter traces, the torch serving backend runs and the ONNX Runtime backend mirrors.

    step(input_ids (B,T), attention_mask (B,P+T), position_ids (B,T), past_key_0, past_value_0, ...)
      -> logits (B,T,V), present_key_0, present_value_0, ...      # each cache tensor (B, kv_heads, P(+T), head_dim)

Prefill passes P=0 empty caches; decode passes T=1. Padding is on the left and masked by attention_mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KVLayout:
    """The cache geometry of a model: what an ONNX file's inputs and a serving backend's buffers look like."""

    layers: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def from_config(cls, config) -> KVLayout:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        return cls(config.num_hidden_layers, kv_heads, head_dim, config.vocab_size)

    def past_names(self) -> list[str]:
        return [f"past_{kv}_{i}" for i in range(self.layers) for kv in ("key", "value")]

    def present_names(self) -> list[str]:
        return [f"present_{kv}_{i}" for i in range(self.layers) for kv in ("key", "value")]

    def empty(self, batch: int, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
        return [torch.zeros(batch, self.kv_heads, 0, self.head_dim, dtype=dtype) for _ in range(2 * self.layers)]


class KVStepModel(torch.nn.Module):
    """Wraps a Hugging Face causal LM so its cache goes in and out as plain tensors (traceable, batch-prunable)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.layout = KVLayout.from_config(model.config)

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers import DynamicCache

        n = self.layout.layers
        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(n)], config=self.model.config)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
        present: list[torch.Tensor] = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)  # (B,T,V), then 2*layers x (B, kv_heads, P+T, head_dim)


def positions_from_mask(attention_mask: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Position ids of the last `new_tokens` columns of a left-padded mask (B, P+T) -> (B, T)."""
    pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return pos[:, -new_tokens:]
