"""Throughput, MFU and memory figures for the metrics lines, and the step progress bar."""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from collections.abc import Iterator
from typing import Any

import torch

# Dense bf16 peak TFLOP/s per GPU, for MFU when metrics.peak_tflops is not set.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: 6 x (matmul parameters) + 12 x layers x hidden x seq (attention scores),
    the PaLM-paper estimate. The input embedding lookup is not a matmul; a tied head counts once."""
    cfg = model.config if hasattr(model, "config") else None
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    if cfg is not None and getattr(cfg, "tie_word_embeddings", False):
        n += cfg.vocab_size * cfg.hidden_size  # the head reuses the embedding matrix as a matmul
    layers = getattr(cfg, "num_hidden_layers", 0) if cfg is not None else 0
    hidden = getattr(cfg, "hidden_size", 0) if cfg is not None else 0
    return 6.0 * n + 12.0 * layers * hidden * seq_len


def peak_tflops(device: str, configured: float | None) -> float | None:
    if configured is not None:
        return configured
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        for key, value in PEAK_TFLOPS.items():
            if key in name:
                return value
    return None  # CPU: no honest single number; set metrics.peak_tflops to get MFU


def peak_memory_gb(device: str) -> float:
    """Peak allocated GPU memory, or the process's peak resident memory on CPU."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 1e9
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes
    return kb / 1e6


@contextlib.contextmanager
def step_bar(total: int, start: int, description: str, enabled: bool) -> Iterator[Any]:
    """A rich progress bar on stderr; `update(advance=1, loss=...)` moves it. A no-op when disabled."""
    if not enabled or os.environ.get("ANEMONE_NO_PROGRESS") == "1":
        yield lambda **kw: None
        return
    if not sys.stderr.isatty():
        # A log file or a pipe: rich would print the bar only when it closes, so write one line per step.
        done = [start]

        def line(**fields: Any) -> None:
            done[0] += 1
            info = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            print(f"{description} step {done[0]}/{total} {info}", file=sys.stderr, flush=True)

        yield line
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*cols, console=Console(file=sys.stderr)) as bar:
        task = bar.add_task(description, total=total, completed=start, info="")

        def update(**fields: Any) -> None:
            info = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            bar.update(task, advance=1, info=info)

        yield update
