"""pytest plugin (auto-loaded through the `pytest11` entry point): the `slow` and `gpu` markers.

`gpu` tests skip when no CUDA device is present; `slow` tests are excluded by the workspace's default
`-m 'not slow'` and run with `pytest -m slow`.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes minutes; excluded from the default run (pytest -m slow)")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped when none is present")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none present)")
    for item in gpu_items:
        item.add_marker(skip)
