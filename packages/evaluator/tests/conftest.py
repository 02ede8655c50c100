"""Shared fixtures: a tiny HF model folder, and a real OpenAI-compatible HTTP server on 127.0.0.1 backed by it
(anemone_evaluator.testing.OpenAIStubServer) with injectable 429 bursts and slow answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anemone_evaluator.testing import OpenAIStubServer


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    from anemone_core.testing import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
def server(tiny_dir):
    torch.set_num_threads(1)
    srv = OpenAIStubServer(tiny_dir)
    yield srv
    srv.close()
