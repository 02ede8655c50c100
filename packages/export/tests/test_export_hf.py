"""HF folder export: LoRA merge, dtype cast, tokenizer and chat template kept, validated by reloading."""

from __future__ import annotations

import json

import pytest
import torch

from anemone_core.errors import AnemoneError
from anemone_export.hf_export import export_hf
from anemone_export.sources import load_source


@pytest.fixture(scope="module")
def lora_dir(tiny_dir, tmp_path_factory):
    import peft
    import transformers

    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir)
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("lora") / "adapter"
    model.save_pretrained(out)
    return out


def test_merge_lora_and_cast(tiny_dir, lora_dir, tmp_path):
    import peft
    import transformers

    source = load_source(str(tiny_dir), adapter=str(lora_dir))
    out = tmp_path / "merged"
    report = export_hf(source, out, dtype="float32")
    assert report.ok
    # The written folder equals PEFT's own merged model (independent reference).
    ref = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(tiny_dir), lora_dir)
    got = transformers.AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        torch.testing.assert_close(got(ids).logits, ref(ids).logits, atol=1e-5, rtol=0)
        plain = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir)(ids).logits
    assert (plain - ref(ids).logits).abs().max() > 1e-3  # the adapter really changed the model
    assert not any("lora" in k for k in got.state_dict())
    assert (out / "chat_template.jinja").is_file() or "chat_template" in (out / "tokenizer_config.json").read_text()


def test_bf16_folder(tiny_source, tmp_path):
    out = tmp_path / "bf16"
    report = export_hf(tiny_source, out, dtype="bfloat16")
    assert json.loads((out / "config.json").read_text()).get("dtype") == "bfloat16"
    assert report.ok and next(tiny_source.model.parameters()).dtype == torch.float32
    before = {k: v.clone() for k, v in tiny_source.model.state_dict().items()}
    export_hf(tiny_source, tmp_path / "f16", dtype="float16")
    assert all(torch.equal(v, before[k]) for k, v in tiny_source.model.state_dict().items())  # source untouched


def test_bad_inputs(tiny_dir, tmp_path):
    with pytest.raises(AnemoneError, match="adapter_config.json"):
        load_source(str(tiny_dir), adapter=str(tmp_path))
    with pytest.raises(AnemoneError, match="does not exist"):
        load_source(str(tmp_path / "nope"))


@pytest.mark.slow  # anemone-bridge's import job takes ~60 s on the shared machine
def test_megatron_checkpoint_through_bridge(tiny_dir, tiny_source, tmp_path):
    bridge = pytest.importorskip("anemone_bridge")
    bridge.import_ckpt(tiny_dir, tmp_path / "mg", quiet=True)
    source = load_source(megatron=str(tmp_path / "mg"))
    report = export_hf(source, tmp_path / "hf", dtype="float32")
    assert report.ok
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(source.model(ids).logits, tiny_source.model(ids).logits, atol=1e-5, rtol=0)
