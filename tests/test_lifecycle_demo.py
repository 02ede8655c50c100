"""Cross-package: the whole lifecycle through each package's own command (`anemone demo --quick`), minutes on CPU."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_every_step_and_the_aligned_model_is_measured(tmp_path):
    run = tmp_path / "demo"
    out = subprocess.run([sys.executable, "-m", "anemone_core.cli", "demo", "--quick", "--run-dir", str(run), "--json"],
                         capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert [s["step"] for s in summary["steps"]] == ["curate", "sft", "grpo", "evaluate", "convert", "export"]
    assert all(s["status"] == "ok" for s in summary["steps"]), summary["steps"]
    for rel in ("curate", "sft/hf/config.json", "grpo/model/config.json", "export/model-f16.gguf", "demo.json"):
        assert (run / rel).exists(), rel
    convert = json.loads((run / "steps" / "convert.json").read_text())
    assert convert["argmax_agreement"] == 1.0 and convert["roundtrip"]["exact"] is True
    answer = json.loads((run / "steps" / "export-serve.json").read_text())
    assert answer["choices"][0]["message"]["content"].strip()
