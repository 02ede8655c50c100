import pytest
import torch


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny Llama + tiny tokenizer as an HF folder, shared by the trainer tests."""
    from anemone_core.testing import save_tiny

    torch.set_num_threads(1)
    return str(save_tiny(tmp_path_factory.mktemp("tiny") / "llama", "llama"))
