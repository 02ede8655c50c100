"""Test helpers: tiny, deterministic, non-trivially initialized Hugging Face models and a tiny tokenizer.

Every architecture Anemone converts or trains has a factory here, so unit tests across packages share one
definition of "tiny Llama" etc. Norm weights and biases are random too (not ones and zeros), so a mapping
that drops or swaps them changes the logits and fails a parity test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

TINY_VOCAB = 512
CHAT_TEMPLATE = (  # the SmolLM2 template, so chat masking is tested on the same format as the embedded model
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_CORPUS = (
    "The quick brown fox jumps over the lazy dog. What is the capital of France? The capital of France is "
    "Paris. 12 + 34 = 46. 7 * 8 = 56. You are a helpful assistant. Answer the question. Hello, world! "
    "Large language models are trained on text. Data, tokens, weights, layers, heads and experts. "
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 user assistant system"
)

_COMMON: dict[str, Any] = dict(
    vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False,
    bos_token_id=1, eos_token_id=2, pad_token_id=2,
)


def tiny_config(arch: str = "llama", **overrides: Any):
    """A tiny HF config. `arch` is one of llama, qwen2, qwen3, mistral, mixtral, qwen3_moe."""
    import transformers as tf

    kw = dict(_COMMON)
    cls: Any
    if arch == "llama":
        cls = tf.LlamaConfig
    elif arch == "qwen2":
        cls, kw = tf.Qwen2Config, kw | dict(use_sliding_window=False)  # qkv bias is built into Qwen2
    elif arch == "qwen3":
        cls, kw = tf.Qwen3Config, kw | dict(head_dim=16, use_sliding_window=False)  # q/k RMSNorm per head
    elif arch == "mistral":
        cls, kw = tf.MistralConfig, kw | dict(sliding_window=None)
    elif arch == "mixtral":
        cls, kw = tf.MixtralConfig, kw | dict(num_local_experts=4, num_experts_per_tok=2, sliding_window=None)
    elif arch == "qwen3_moe":
        cls = tf.Qwen3MoeConfig
        kw = kw | dict(head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
                       decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True, use_sliding_window=False)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}: choose llama, qwen2, qwen3, mistral, mixtral, qwen3_moe")
    kw.update(overrides)
    return cls(**kw)


def init_nontrivial(model: torch.nn.Module, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """Deterministically re-initialize every parameter: weights ~ N(0, std), norm weights ~ 1 + N(0, 0.1),
    biases ~ N(0, std). Independent of the model's own init, so equal seeds give equal weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
            if "norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.1 * noise)
            else:
                param.copy_(std * noise)
    return model


def tiny_model(arch: str = "llama", seed: int = 0, **overrides: Any):
    """A tiny random causal LM of `arch` in fp32, deterministic for a given seed."""
    import transformers as tf

    config = tiny_config(arch, **overrides)
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return init_nontrivial(model, seed).eval()


def tiny_llama(seed: int = 0, **kw: Any):
    return tiny_model("llama", seed, **kw)


def tiny_qwen2(seed: int = 0, **kw: Any):
    return tiny_model("qwen2", seed, **kw)


def tiny_qwen3(seed: int = 0, **kw: Any):
    return tiny_model("qwen3", seed, **kw)


def tiny_mistral(seed: int = 0, **kw: Any):
    return tiny_model("mistral", seed, **kw)


def tiny_mixtral(seed: int = 0, **kw: Any):
    return tiny_model("mixtral", seed, **kw)


def tiny_qwen3_moe(seed: int = 0, **kw: Any):
    return tiny_model("qwen3_moe", seed, **kw)


def tiny_tokenizer(vocab_size: int = TINY_VOCAB):
    """A byte-level BPE tokenizer trained (deterministically) on a built-in paragraph, with ChatML specials
    and the SmolLM2 chat template. Ids: 0 <|endoftext|>, 1 <|im_start|>, 2 <|im_end|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny(out: str | Path, arch: str = "llama", seed: int = 0, **overrides: Any) -> Path:
    """Write a tiny model plus the tiny tokenizer as an HF folder (for tests of file-based entry points)."""
    out = Path(out)
    model = tiny_model(arch, seed, **overrides)
    model.save_pretrained(out, safe_serialization=True)
    tiny_tokenizer(model.config.vocab_size).save_pretrained(out)
    return out


def has_gpu() -> bool:
    return torch.cuda.is_available()
