"""Parity at TP=PP=EP=1 in this process: Megatron logits equal transformers', the export is bit-exact."""

from __future__ import annotations

import pytest
import torch

from anemone_bridge.jobs import verify_job

ARCHS = ["llama", "llama_tied", "qwen2", "qwen3", "mistral", "mixtral", "qwen3_moe"]


@pytest.mark.parametrize("arch", ARCHS)
def test_verify_tp1(tiny_folders, arch):
    torch.set_num_threads(1)
    report = verify_job(str(tiny_folders[arch]), seq_len=16)
    assert report["argmax_agreement"] == 1.0
    assert report["cosine_min"] >= 0.9999
    assert report["max_abs_diff"] < 1e-4
    rt = report["roundtrip"]
    assert rt["exact"] and rt["missing"] == [] and rt["extra"] == []
    assert all(v == 0.0 for v in rt["per_tensor"].values())
    assert report["ok"]


def test_save_hf_pretrained_is_loadable_by_transformers(tiny_folders, tmp_path):
    from transformers import AutoModelForCausalLM

    from anemone_bridge import AutoBridge

    src = tiny_folders["qwen3"]
    bridge = AutoBridge.from_hf_pretrained(src)
    with bridge.parallel():
        model = bridge.to_megatron_model()
        bridge.save_hf_pretrained(model, tmp_path / "out", max_shard_bytes=50_000)  # several shards + index
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    ids = torch.tensor([[1, 5, 9, 200, 3, 7]])
    a = AutoModelForCausalLM.from_pretrained(src).eval()(ids).logits
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()(ids).logits
    assert torch.equal(a, b)


def test_llama3_rope_scaling_matches_transformers(tmp_path):
    from anemone_core.testing import save_tiny

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
    folder = save_tiny(tmp_path / "llama3", "llama", rope_parameters=rope)
    report = verify_job(str(folder), seq_len=48)
    assert report["ok"] and report["max_abs_diff"] < 1e-4


@pytest.mark.parametrize(("arch", "overrides"), [
    ("mistral", {"sliding_window": 4}),  # every layer windowed, well inside the 16 tokens
    ("qwen2", {"use_sliding_window": True, "sliding_window": 3, "max_window_layers": 1}),  # layer 1 only
    ("qwen3_moe", {"norm_topk_prob": False}),  # router weights not renormalized over the top k
])
def test_sliding_window_and_router_variants_match_transformers(tmp_path, arch, overrides):
    from anemone_core.testing import save_tiny, tiny_model

    folder = save_tiny(tmp_path / arch, arch, **overrides)
    report = verify_job(str(folder), seq_len=16)
    assert report["ok"] and report["max_abs_diff"] < 1e-4, report
    # the variant changes transformers' own logits, so the parity above is not vacuous
    ids = torch.arange(3, 19)[None]
    plain = {"sliding_window": None, "use_sliding_window": False, "norm_topk_prob": True}
    with torch.no_grad():
        varied = tiny_model(arch, 0, **overrides)(ids).logits
        base = tiny_model(arch, 0, **{k: plain[k] for k in overrides if k in plain})(ids).logits
    assert not torch.allclose(varied, base, atol=1e-4)


def test_sliding_window_maps_to_megatron_window(tmp_path):
    from anemone_bridge.hf_config import read_hf_config
    from anemone_bridge.model_builder import sliding_window_kwargs
    from anemone_core.testing import save_tiny

    mistral = read_hf_config(save_tiny(tmp_path / "m", "mistral", sliding_window=4096))
    assert sliding_window_kwargs(mistral) == {"window_size": (4095, 0)}
    qwen = read_hf_config(save_tiny(tmp_path / "q", "qwen2", use_sliding_window=True, sliding_window=8,
                                    max_window_layers=1))
    assert sliding_window_kwargs(qwen) == {"window_size": (7, 0), "window_attn_skip_freq": [0, 1]}
    assert sliding_window_kwargs(read_hf_config(save_tiny(tmp_path / "n", "mistral"))) == {}  # window None
