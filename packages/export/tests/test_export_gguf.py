"""GGUF export: read back by transformers' GGUF loader (an independent reader); tokenizer and chat template kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anemone_core.errors import AnemoneError
from anemone_export.gguf_export import export_gguf, gguf_name, permute_qk


def test_name_table_covers_llama(tiny_source):
    names = {gguf_name(n) for n in tiny_source.model.state_dict()}
    assert {"token_embd.weight", "output.weight", "blk.1.attn_q.weight", "blk.0.ffn_down.weight"} <= names
    with pytest.raises(AnemoneError, match="not supported"):
        gguf_name("model.layers.0.block_sparse_moe.gate.weight")


def test_permute_roundtrips_with_transformers_reverse():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.arange(8 * 16 * 3, dtype=np.float32).reshape(8 * 16, 3)
    back = LlamaTensorProcessor()._reverse_permute_weights(permute_qk(w, 8), 8, 8)
    np.testing.assert_array_equal(back, w)


@pytest.mark.parametrize("qtype", ["f32", "f16", "q8_0", "q4_1"])
def test_tiny_gguf_types(tiny_source, tmp_path, qtype):
    out = tmp_path / f"m-{qtype}.gguf"
    report = export_gguf(tiny_source, out, qtype, min_agreement=0.5 if qtype == "q4_1" else None)
    checks = {c.name: c.value for c in report.checks}
    assert out.is_file() and checks["token ids (reader vs source)"] == "equal" and checks["chat template"] == "kept"
    if qtype == "f32":
        assert checks["max |logit diff|"] < 1e-5


def test_gguf_metadata_readable(tiny_source, tmp_path):
    from gguf import GGUFReader

    out = tmp_path / "m.gguf"
    export_gguf(tiny_source, out, "f16")
    fields = GGUFReader(str(out)).fields
    tmpl = bytes(fields["tokenizer.chat_template"].parts[-1]).decode()
    assert tmpl == tiny_source.tokenizer.chat_template
    assert bytes(fields["tokenizer.ggml.model"].parts[-1]).decode() == "gpt2"


def test_gguf_refuses_existing_and_failed(tiny_source, tmp_path):
    out = tmp_path / "m.gguf"
    with pytest.raises(AnemoneError, match="min-agreement"):
        export_gguf(tiny_source, out, "q4_0", min_agreement=1.01)
    assert not out.exists() and not list(tmp_path.iterdir())
    out.write_bytes(b"x")
    with pytest.raises(AnemoneError, match="--overwrite"):
        export_gguf(tiny_source, out, "f32")


@pytest.mark.slow  # ~30-90 s on the shared 2-core machine; run with -m slow
def test_embedded_model_gguf_cli(tmp_path, capsys):
    from anemone_core.cli import main

    out = tmp_path / "smol-q8_0.gguf"
    assert main(["export", "gguf", "--type", "q8_0", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and out.is_file()
    checks = {c["name"]: c["value"] for c in report["checks"]}
    assert checks["greedy agreement"] >= 0.9 and checks["chat template"] == "kept"


@pytest.mark.slow
def test_embedded_f16_gguf_in_llama_cpp(embedded_source, tmp_path):
    """llama.cpp (llama-cpp-python, a ~16 min source build) agrees with torch on greedy tokens."""
    llama_cpp = pytest.importorskip("llama_cpp")
    out = tmp_path / "smol-f16.gguf"
    export_gguf(embedded_source, out, "f16")
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=512, logits_all=True, verbose=False)
    tok = embedded_source.tokenizer
    ids = tok("The capital of France is", add_special_tokens=False)["input_ids"]
    assert llm.tokenize(b"The capital of France is", add_bos=False, special=False) == ids
    llm.eval(ids)
    ours = np.array(llm.scores[: len(ids)])
    with torch.no_grad():
        ref = embedded_source.model(input_ids=torch.tensor([ids])).logits[0].numpy()
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() == 1.0
