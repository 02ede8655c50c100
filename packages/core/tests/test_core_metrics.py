import math

import yaml

from anemone_core.metrics import MetricsLogger, progress, read_metrics, write_run_config


def test_jsonl_rows(tmp_path):
    import torch

    with MetricsLogger(tmp_path) as log:
        log.log(1, loss=torch.tensor(2.5), lr=1e-3)
        log.log(2, loss=math.nan)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["loss"] == 2.5 and rows[0]["lr"] == 1e-3 and rows[1]["loss"] == "nan"


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with MetricsLogger(tmp_path / "r1") as log:
        log.log(1, loss=1.0)
    assert not (tmp_path / "r1").exists()


def test_unknown_sink(tmp_path):
    import pytest

    from anemone_core.errors import AnemoneError

    with pytest.raises(AnemoneError, match="unknown metrics sink"):
        MetricsLogger(tmp_path, sinks=["jsonl", "graphite"])


def test_run_config_and_progress(tmp_path):
    from pydantic import BaseModel

    class C(BaseModel):
        lr: float = 0.1

    path = write_run_config(tmp_path, C())
    assert yaml.safe_load(path.read_text()) == {"lr": 0.1}
    assert list(progress(range(5), description="t")) == [0, 1, 2, 3, 4]
    assert list(progress(total=3, disable=True)) == [0, 1, 2]
