"""`hf_config.HFConfig` reads config.json without transformers; every field the bridge uses must equal what
transformers' `AutoConfig` makes of the same file, class defaults included."""

from __future__ import annotations

import json

import pytest

from anemone_bridge.hf_config import read_hf_config
from anemone_core.errors import AnemoneError

FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
          "vocab_size", "rms_norm_eps", "tie_word_embeddings", "max_position_embeddings", "rope_parameters",
          "sliding_window", "layer_types")
MOE_FIELDS = {"mixtral": ("num_local_experts", "num_experts_per_tok"),
              "qwen3_moe": ("num_experts", "num_experts_per_tok", "moe_intermediate_size", "norm_topk_prob")}
_ARCH = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
         "qwen3": "Qwen3ForCausalLM", "mixtral": "MixtralForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM"}


def _assert_same(folder, model_type: str) -> None:
    from transformers import AutoConfig

    ours, ref = read_hf_config(folder), AutoConfig.from_pretrained(folder)
    for field in FIELDS + MOE_FIELDS.get(model_type, ()):
        assert getattr(ours, field, None) == getattr(ref, field, None), field
    # head_dim: transformers' attention takes config.head_dim, else hidden_size // heads
    ref_head = getattr(ref, "head_dim", None) or ref.hidden_size // ref.num_attention_heads
    assert ours.head_dim == ref_head


@pytest.mark.parametrize("name", ["llama", "llama_tied", "qwen2", "qwen3", "mistral", "mixtral", "qwen3_moe"])
def test_tiny_folders_read_like_transformers(tiny_folders, name):
    _assert_same(tiny_folders[name], read_hf_config(tiny_folders[name]).model_type)


@pytest.mark.parametrize("model_type", sorted(_ARCH))
def test_class_defaults_match_transformers(tmp_path, model_type):
    # only the sizes: every optional field comes from the class defaults on both sides
    raw = {"architectures": [_ARCH[model_type]], "model_type": model_type, "hidden_size": 64,
           "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 512}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    _assert_same(tmp_path, model_type)


@pytest.mark.parametrize(("model_type", "extra"), [
    ("llama", {"rope_theta": 500000.0, "rope_scaling": {"type": "linear", "factor": 2.0}}),  # transformers 4 style
    ("qwen2", {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1}),
    ("qwen2", {"use_sliding_window": False, "sliding_window": 8}),
    ("mistral", {"sliding_window": None, "num_key_value_heads": 2, "torch_dtype": "bfloat16"}),
])
def test_legacy_and_window_fields_match_transformers(tmp_path, model_type, extra):
    raw = {"architectures": [_ARCH[model_type]], "model_type": model_type, "hidden_size": 64,
           "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 512, **extra}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    _assert_same(tmp_path, model_type)
    if "torch_dtype" in extra:
        assert read_hf_config(tmp_path).dtype == "bfloat16"


def test_missing_size_field_is_named(tmp_path):
    from anemone_bridge import AutoBridge

    raw = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(AnemoneError, match=r"lacks \['num_hidden_layers', 'num_attention_heads'"):
        AutoBridge.from_hf_pretrained(tmp_path)


def test_config_is_written_back_unchanged(tiny_folders, tmp_path):
    cfg = read_hf_config(tiny_folders["qwen3"])
    cfg.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(
        (tiny_folders["qwen3"] / "config.json").read_text())
