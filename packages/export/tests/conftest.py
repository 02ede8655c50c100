"""Shared fixtures of anemone-export's tests: a tiny Llama folder and the embedded model's source, built once."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # the CI machine has 2 shared cores
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from anemone_core.testing import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny") / "llama", "llama")


@pytest.fixture(scope="session")
def tiny_source(tiny_dir):
    from anemone_export.sources import load_source

    return load_source(str(tiny_dir))


@pytest.fixture(scope="session")
def embedded_source():
    from anemone_export.sources import load_source

    return load_source(None)
