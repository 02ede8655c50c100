"""Bad inputs fail before any work with a message naming the value, the rule and the fix; nothing partial
is left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from anemone_bridge import AutoBridge
from anemone_bridge.convert import export_ckpt, import_ckpt, verify
from anemone_bridge.jobs import verify_job
from anemone_core.errors import AnemoneError


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(name) or p.name.startswith(f".{name}")]


def test_unsupported_architecture_lists_supported(tiny_folders, tmp_path):
    folder = _copy(tiny_folders["llama"], tmp_path / "gpt2ish")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["FalconForCausalLM"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AnemoneError, match=r"FalconForCausalLM.*not supported.*MixtralForCausalLM"):
        AutoBridge.from_hf_pretrained(folder)


def test_tp_not_dividing_heads_lists_valid_values(tiny_folders):
    with pytest.raises(AnemoneError, match=r"tp=3 does not divide num_attention_heads=4.*choose tp in \{1,2\}"):
        verify(tiny_folders["llama"], tp=3)


def test_pp_not_dividing_layers(tiny_folders):
    with pytest.raises(AnemoneError, match=r"pp=3 does not divide num_layers=2: choose pp in \{1,2\}"):
        verify(tiny_folders["qwen2"], pp=3)


def test_ep_on_dense_model_and_ep_not_dividing_experts(tiny_folders):
    with pytest.raises(AnemoneError, match=r"ep=2 needs a mixture-of-experts model"):
        verify(tiny_folders["qwen3"], ep=2)
    with pytest.raises(AnemoneError, match=r"ep=3 does not divide num_experts=4: choose ep in \{1,2,4\}"):
        verify(tiny_folders["mixtral"], ep=3)


def test_truncated_safetensors_is_a_clear_error(tiny_folders, tmp_path):
    folder = _copy(tiny_folders["llama"], tmp_path / "truncated")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(AnemoneError, match=r"corrupt or truncated"):
        verify_job(str(folder))


def test_garbage_safetensors_header_is_a_clear_error(tiny_folders, tmp_path):
    folder = _copy(tiny_folders["llama"], tmp_path / "garbage")
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(AnemoneError, match=r"corrupt or truncated"):
        verify_job(str(folder))


def test_unused_hf_tensor_is_refused_unless_allowed(tiny_folders, tmp_path):
    folder = _copy(tiny_folders["llama"], tmp_path / "extra")
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(AnemoneError, match=r"1 HF tensor\(s\).*not used.*rotary_emb.inv_freq.*--allow-missing"):
        verify_job(str(folder))
    report = verify_job(str(folder), allow_missing=["*rotary_emb.inv_freq"])
    assert report["argmax_agreement"] == 1.0


def test_missing_hf_tensor_is_named(tiny_folders, tmp_path):
    folder = _copy(tiny_folders["qwen2"], tmp_path / "missing")
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors["model.layers.1.self_attn.k_proj.bias"]
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(AnemoneError, match=r"not in .*model\.layers\.1\.self_attn\.k_proj\.bias"):
        verify_job(str(folder))


def test_existing_output_refused_and_failed_import_leaves_nothing(tiny_folders, tmp_path):
    existing = tmp_path / "taken"
    existing.mkdir()
    with pytest.raises(AnemoneError, match=r"already exists.*--overwrite"):
        import_ckpt(tiny_folders["llama"], existing, quiet=True)
    broken = _copy(tiny_folders["llama"], tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(AnemoneError, match=r"corrupt or truncated"):
        import_ckpt(broken, tmp_path / "never", quiet=True)
    assert _leftovers(tmp_path, "never") == []


def test_export_refuses_a_folder_that_is_not_a_checkpoint(tiny_folders, tmp_path):
    with pytest.raises(AnemoneError, match=r"not an anemone-bridge Megatron checkpoint.*anemone bridge import"):
        export_ckpt(tiny_folders["llama"], tmp_path / "out")
    with pytest.raises(AnemoneError, match=r"does not exist"):
        export_ckpt(tmp_path / "nope", tmp_path / "out")


def test_missing_config_json(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnemoneError, match=r"config\.json"):
        verify(tmp_path / "empty")


def test_tp_not_dividing_kv_heads_lists_valid_values(tiny_folders):
    # 4 heads, 2 KV heads: tp=4 divides the heads but not the KV heads
    with pytest.raises(AnemoneError, match=r"tp=4 does not divide .*num_key_value_heads=2: choose tp in \{1,2\}"):
        verify(tiny_folders["llama"], tp=4)


def test_unmapped_megatron_parameter_is_listed_unless_allowed(tiny_folders):
    import dataclasses

    from anemone_bridge.mapping import Table

    bridge = AutoBridge.from_hf_pretrained(tiny_folders["llama"])
    table = bridge.arch.table
    no_final_norm = [m for m in table.globals if m.megatron != "decoder.final_layernorm.weight"]
    bridge.arch = dataclasses.replace(bridge.arch, table=Table(no_final_norm, table.per_layer, table.per_expert))
    with bridge.parallel():
        with pytest.raises(AnemoneError, match=r"1 Megatron parameter\(s\) have no mapping.*"
                                               r"decoder\.final_layernorm\.weight.*--allow-missing"):
            bridge.to_megatron_model()
        # accepting it means the HF tensor it came from is dropped too, so both are named
        model = bridge.to_megatron_model(allow_missing=["decoder.final_layernorm.weight", "model.norm.weight"])
        assert model.decoder.final_layernorm.weight.shape == (64,)


def test_export_refuses_existing_output_and_a_damaged_checkpoint_leaves_nothing(tiny_folders, tmp_path):
    import_ckpt(tiny_folders["qwen2"], tmp_path / "mg", quiet=True)
    (tmp_path / "taken").mkdir()
    with pytest.raises(AnemoneError, match=r"taken already exists.*--overwrite"):
        export_ckpt(tmp_path / "mg", tmp_path / "taken", quiet=True)
    data = next((tmp_path / "mg").glob("*.distcp"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # truncated tensor data
    with pytest.raises(AnemoneError, match=r"cannot read the Megatron checkpoint .*mg.*re-import"):
        export_ckpt(tmp_path / "mg", tmp_path / "never", quiet=True)
    assert _leftovers(tmp_path, "never") == []


def test_cli_import_into_an_existing_folder_exits_2(tiny_folders, tmp_path, capsys):
    from anemone_core.cli import main

    (tmp_path / "out").mkdir()
    assert main(["bridge", "import", "--model", str(tiny_folders["llama"]), "--out", str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err
