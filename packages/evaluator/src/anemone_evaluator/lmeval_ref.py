"""Run lm-evaluation-harness (the reference) on our task YAML and model, offline, for side-by-side checks.

lm-eval is a dev dependency (`uv pip install lm-eval==0.4.13`), imported here only. Our task files are
lm-eval task files; the copy given to lm-eval only has its data paths made absolute (lm-eval resolves
them against the working directory) and the `limit` applied to the data.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from anemone_core.errors import require
from anemone_evaluator.tasks import Task


def _lmeval_task_dir(tasks: list[Task], limit: int | None, folder: Path) -> None:
    for task in tasks:
        raw = yaml.safe_load(Path(task.source).read_text(encoding="utf-8"))
        data = folder / f"{task.name}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in task.docs[:limit]), encoding="utf-8")
        raw["dataset_path"] = "json"
        raw["dataset_kwargs"] = {"data_files": {task.config.test_split: str(data)}}
        (folder / f"{task.name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


def run_lmeval(model_dir: str | Path, tasks: list[Task], limit: int | None = None, batch_size: int = 16,
               apply_chat_template: bool = False) -> dict[str, Any]:
    """{task: {"metrics": {name: value}, "samples": [{doc_id, ...}]}} from lm-eval's HF backend on CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    lm_eval = require("lm_eval", "uv pip install 'anemone-evaluator[lmeval]'", "comparing with lm-evaluation-harness")
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as tmp:
        _lmeval_task_dir(tasks, limit, Path(tmp))
        out = lm_eval.simple_evaluate(
            model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=[t.name for t in tasks],
            task_manager=TaskManager(include_path=tmp, include_defaults=False), device="cpu",
            batch_size=batch_size, log_samples=True, apply_chat_template=apply_chat_template,
            num_fewshot=0, random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0,
        )
    result = {}
    for t in tasks:
        metrics = {k.split(",")[0]: v for k, v in out["results"][t.name].items()
                   if "," in k and "_stderr" not in k}
        result[t.name] = {"metrics": metrics, "samples": sorted(out["samples"][t.name], key=lambda s: s["doc_id"])}
    return result
