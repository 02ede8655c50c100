"""Real multi-process runs (torchrun + gloo, launched by the API itself): TP, PP, EP and resharding.

The default run keeps one: import at TP=2, export in one process (a reshard), transformers loads the result
with logits equal to the original's. The per-architecture layouts are `slow` (about a minute each here).
"""

from __future__ import annotations

import pytest
import torch

from anemone_bridge.convert import export_ckpt, import_ckpt, verify


def _hf_logits(folder) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 5, 9, 200, 3, 7, 42, 300]])
    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(folder).eval()(ids).logits


def test_import_tp2_then_export_gives_identical_transformers_model(tiny_folders, tmp_path):
    src = tiny_folders["llama_tied"]
    imp = import_ckpt(src, tmp_path / "mg", tp=2, quiet=True)
    assert imp["tp"] == 2 and (tmp_path / "mg" / "metadata.json").is_file()
    exp = export_ckpt(tmp_path / "mg", tmp_path / "hf", quiet=True)
    assert exp["saved_layout"] == {"tp": 2, "pp": 1, "ep": 1} and exp["load_layout"]["tp"] == 1
    assert torch.equal(_hf_logits(src), _hf_logits(tmp_path / "hf"))
    assert (tmp_path / "hf" / "tokenizer.json").is_file()


def _check(report: dict) -> None:
    assert report["argmax_agreement"] == 1.0, report
    assert report["cosine_min"] >= 0.9999
    assert report["roundtrip"]["exact"], {k: v for k, v in report["roundtrip"].items() if k != "per_tensor"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "tp", "pp", "ep"),
    [("qwen2", 2, 1, 1), ("qwen2", 1, 2, 1), ("qwen3", 2, 1, 1), ("qwen3", 1, 2, 1), ("mixtral", 1, 1, 2),
     ("mixtral", 2, 1, 1), ("mixtral", 1, 2, 1), ("qwen3_moe", 1, 1, 2), ("mistral", 2, 1, 1)],
)
def test_verify_layouts(tiny_folders, arch, tp, pp, ep):
    _check(verify(tiny_folders[arch], tp=tp, pp=pp, ep=ep, quiet=True))


@pytest.mark.slow
def test_verify_pp2_tied_embeddings(tiny_folders):
    # the last stage's output layer must hold the tied embedding (the CPU tied_embedding_sync patch)
    _check(verify(tiny_folders["llama_tied"], pp=2, quiet=True))


@pytest.mark.slow
def test_reshard_pp2_checkpoint_loaded_at_tp2(tiny_folders, tmp_path):
    src = tiny_folders["qwen3"]
    import_ckpt(src, tmp_path / "mg", pp=2, quiet=True)
    export_ckpt(tmp_path / "mg", tmp_path / "hf", tp=2, quiet=True)
    assert torch.equal(_hf_logits(src), _hf_logits(tmp_path / "hf"))


@pytest.mark.slow
def test_reshard_ep2_moe_checkpoint(tiny_folders, tmp_path):
    src = tiny_folders["mixtral"]
    import_ckpt(src, tmp_path / "mg", ep=2, quiet=True)
    export_ckpt(tmp_path / "mg", tmp_path / "hf", quiet=True)
    assert torch.equal(_hf_logits(src), _hf_logits(tmp_path / "hf"))


@pytest.mark.slow
def test_embedded_model_verify_tp1():
    report = verify(quiet=True)
    _check(report)
    assert report["roundtrip"]["tensors"] == 272
