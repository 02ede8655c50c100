"""ONNX export: KV-cache graph parity with torch in ONNX Runtime (prefill, decode, left padding), refusal on failure."""

from __future__ import annotations

import json

import pytest
import torch

from anemone_core.errors import AnemoneError
from anemone_export.kv_model import KVStepModel, positions_from_mask
from anemone_export.onnx_export import OnnxStep, export_onnx


def test_tiny_onnx_export_validates(tiny_source, tmp_path):
    out = tmp_path / "onnx"
    report = export_onnx(tiny_source, out)
    assert report.ok
    values = {c.name: c.value for c in report.checks}
    assert values["prefill max |logit diff|"] < 1e-5 and values["decode max |logit diff|"] < 1e-5
    meta = json.loads((out / "anemone_onnx.json").read_text())
    assert meta["layout"]["layers"] == 2 and (out / "tokenizer.json").is_file()
    assert json.loads((out / "validation.json").read_text())["ok"]


def test_onnx_left_padded_batch_matches_torch(tiny_source, tmp_path):
    out = tmp_path / "onnx"
    export_onnx(tiny_source, out)
    ort_step, torch_step = OnnxStep(out / "model.onnx"), KVStepModel(tiny_source.model)
    ids = torch.randint(0, 512, (2, 6))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    pos = positions_from_mask(mask, 6)
    a = ort_step(ids, mask, pos, *torch_step.layout.empty(2))
    with torch.no_grad():
        b = torch_step(ids, mask, pos, *torch_step.layout.empty(2))
    torch.testing.assert_close(a[0][:, -3:], b[0][:, -3:], atol=1e-5, rtol=0)
    # The padded row equals the same prompt run alone.
    with torch.no_grad():
        alone = tiny_source.model(input_ids=ids[:1, 3:]).logits
    torch.testing.assert_close(a[0][0, 3:], alone[0], atol=1e-5, rtol=0)


def test_onnx_refuses_when_validation_fails(tiny_source, tmp_path):
    out = tmp_path / "onnx"
    with pytest.raises(AnemoneError, match="--atol"):
        export_onnx(tiny_source, out, atol=-1.0)
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-written is left


@pytest.mark.slow  # ~30-90 s on the shared 2-core machine; run with -m slow
def test_embedded_model_onnx_cli(tmp_path, capsys):
    from anemone_core.cli import main

    out = tmp_path / "onnx"
    assert main(["export", "onnx", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and (out / "model.onnx").is_file()
    checks = {c["name"]: c["value"] for c in report["checks"]}
    assert checks["greedy agreement"] >= 0.99 and checks["decode max |logit diff|"] <= 5e-4
