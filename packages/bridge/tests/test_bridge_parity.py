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
