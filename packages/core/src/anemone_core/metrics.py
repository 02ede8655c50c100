"""Observability: metrics as JSON lines (always), TensorBoard / Weights & Biases / MLflow (optional, lazy),
rich progress bars, and the resolved config written beside every run's outputs."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from anemone_core.errors import AnemoneError, require
from anemone_core.io import atomic_write_text

T = TypeVar("T")
SINKS = ("jsonl", "tensorboard", "wandb", "mlflow")


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _clean(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible rather than crash or drop them
    return value


class MetricsLogger:
    """`log(step, loss=..., lr=...)` appends `{"step", "time", ...}` to `metrics.jsonl` and forwards to the sinks.

    Only global rank 0 writes. Each line is flushed, so a killed run keeps every logged step.
    """

    def __init__(self, run_dir: str | os.PathLike, sinks: Sequence[str] = ("jsonl",), run_name: str | None = None,
                 config: dict[str, Any] | None = None, filename: str = "metrics.jsonl") -> None:
        unknown = [s for s in sinks if s not in SINKS]
        if unknown:
            raise AnemoneError(f"unknown metrics sink(s) {unknown}: choose from {list(SINKS)}")
        self.run_dir = Path(run_dir)
        self.active = _is_main()
        self.path = self.run_dir / filename
        self._fh = None
        self._tb = self._wandb = self._mlflow = None
        if not self.active:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if "jsonl" in sinks:
            self._fh = self.path.open("a", encoding="utf-8")
        if "tensorboard" in sinks:
            require("tensorboard", "uv pip install 'anemone-core[tensorboard]'", "the TensorBoard sink")
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        if "wandb" in sinks:
            wandb = require("wandb", "uv pip install 'anemone-core[wandb]'", "the Weights & Biases sink")
            self._wandb = wandb.init(name=run_name, config=config, dir=str(self.run_dir))
        if "mlflow" in sinks:
            mlflow = require("mlflow", "uv pip install 'anemone-core[mlflow]'", "the MLflow sink")
            mlflow.start_run(run_name=run_name)
            if config:
                mlflow.log_params({k: str(v)[:250] for k, v in _flatten(config).items()})
            self._mlflow = mlflow

    def log(self, step: int, **metrics: Any) -> dict[str, Any]:
        row = {"step": step, "time": round(time.time(), 3)} | {k: _clean(v) for k, v in metrics.items()}
        if not self.active:
            return row
        if self._fh:
            self._fh.write(json.dumps(row, default=str) + "\n")
            self._fh.flush()
        numeric = {k: v for k, v in row.items() if isinstance(v, int | float) and k not in ("step", "time")}
        if self._tb:
            for k, v in numeric.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb:
            self._wandb.log(numeric, step=step)
        if self._mlflow:
            self._mlflow.log_metrics(numeric, step=step)
        return row

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None
        if self._tb:
            self._tb.close()
        if self._wandb:
            self._wandb.finish()
        if self._mlflow:
            self._mlflow.end_run()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def write_run_config(run_dir: str | os.PathLike, config: Any, name: str = "config.yaml") -> Path:
    """Write the resolved config (a pydantic model or a dict) beside the run's outputs."""
    data = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
    return atomic_write_text(Path(run_dir) / name, yaml.safe_dump(data, sort_keys=False))


def progress(items: Iterable[T] | None = None, total: int | None = None, description: str = "working",
             disable: bool | None = None) -> Iterator[T]:
    """Iterate with a rich progress bar on stderr (rank 0 only; off when ANEMONE_NO_PROGRESS=1)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if disable is None:
        disable = not _is_main() or os.environ.get("ANEMONE_NO_PROGRESS") == "1"
    seq: Iterable[Any] = items if items is not None else range(total or 0)
    if total is None and hasattr(seq, "__len__"):
        total = len(seq)  # type: ignore[arg-type]
    if disable:
        yield from seq
        return
    from rich.console import Console

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)
        for item in seq:
            yield item
            bar.advance(task)
