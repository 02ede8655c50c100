from __future__ import annotations

from pathlib import Path

import pytest

from anemone_core.testing import tiny_model, tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory) -> dict[str, Path]:
    """Tiny HF folders (model + tokenizer) for every architecture, plus a tied-embedding Llama."""
    root = tmp_path_factory.mktemp("bridge_tiny")
    tok = tiny_tokenizer()  # trained once, saved into every folder
    specs = {a: (a, {}) for a in ("llama", "qwen2", "qwen3", "mistral", "mixtral", "qwen3_moe")}
    specs["llama_tied"] = ("llama", {"tie_word_embeddings": True})
    out = {}
    for name, (arch, kw) in specs.items():
        tiny_model(arch, 0, **kw).save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = root / name
    return out
