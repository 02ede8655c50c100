"""Shared fixtures: a tiny Llama folder, an in-process trainer runner and a torchrun runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    from anemone_core.testing import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny") / "llama", "llama")


@pytest.fixture(autouse=True)
def _one_thread():
    # 2 cores shared by many jobs: 2 threads can be 10x slower than 1 (FACTS.md).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ["ANEMONE_NO_PROGRESS"] = "1"
    yield
    torch.set_num_threads(old)


def run_train(tiny: Path, out: Path, *overrides: str, keep_model: bool = False) -> dict:
    from anemone_automodel.config import FinetuneConfig
    from anemone_automodel.trainer import train
    from anemone_core.config import load_config

    base = [f"model.path={tiny}", f"output.dir={out}", "train.steps=4", "optim.warmup_steps=1"]
    return train(load_config(FinetuneConfig, None, base + list(overrides)), keep_model=keep_model)


def run_cli(args: list[str], nproc: int = 1, env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    """`python -m anemone_automodel.run ...`, under torchrun when nproc > 1; one thread per process."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = (launcher if nproc > 1 else [sys.executable]) + ["-m", "anemone_automodel.run", *args]
    full_env = dict(os.environ, OMP_NUM_THREADS="1", ANEMONE_NO_PROGRESS="1", **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)


def summary_of(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{"):])


@pytest.fixture
def train_fn():
    return run_train


@pytest.fixture
def cli():
    return run_cli, summary_of
