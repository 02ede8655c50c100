"""Run folders: fresh start, or resume from the latest complete checkpoint with the metrics cut to match.

Layout: <out>/config.yaml, metrics.jsonl, checkpoints/step-000004/{model/, optimizer.pt, state.json},
model/ (final HF folder), summary.json. A checkpoint is written to a temporary folder and renamed, so a kill
while saving leaves the previous one as the latest.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anemone_core.errors import AnemoneError
from anemone_core.io import atomic_dir, atomic_write_text
from anemone_core.models import resolve_model

_STEP = re.compile(r"^step-(\d{6})$")


def checkpoints(out: Path) -> list[tuple[int, Path]]:
    root = out / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)) and (p / "state.json").is_file()]
    return sorted(found)


def prepare(out: Path, config: dict[str, Any], overwrite: bool, total_steps: int | None = None,
            steps_key: str | None = None, defaults: dict[str, Any] | None = None) -> tuple[int, Path | None]:
    """-> (step to start from, checkpoint folder to resume from or None).

    The starting model (`config["model"]["path"]`) is checked first: a wrong path neither creates `out` nor
    wipes it under `overwrite`.

    `steps_key` ("dpo.steps") names the step count in `config`: it may differ from the checkpoint's, so a
    finished run is extended by raising it (the data order is a function of seed and step; a decaying lr
    schedule follows the new length from the resumed step on).

    `defaults` (the config class's defaults, same layout) lets a run written by an older version resume: a
    field its checkpoint lacks counts as unchanged when the current value is that field's default."""
    resolve_model(config.get("model", {}).get("path"))  # raises, naming the path and the fix
    if overwrite and out.exists():
        shutil.rmtree(out)
    ckpts = checkpoints(out)
    if not ckpts:
        if (out / "metrics.jsonl").exists() or (out / "model").exists():
            raise AnemoneError(f"run.out = {str(out)!r} holds a run without a checkpoint to resume: pass "
                               f"run.overwrite=true to start afresh, or choose another run.out")
        out.mkdir(parents=True, exist_ok=True)
        return 0, None
    step, folder = ckpts[-1]
    saved = json.loads((folder / "state.json").read_text())
    free = (steps_key, *NOT_COMPARED)
    before, now = _without(saved.get("config", {}), free), _without(config, free)
    if defaults:
        before = _with_new_defaults(before, now, defaults)
    if before != now:
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        raise AnemoneError(f"run.out = {str(out)!r} holds a run with a different config (sections {changed}): "
                           f"resume with the same config, pass run.overwrite=true, or choose another run.out")
    if total_steps is not None and step >= total_steps and (out / "model").is_dir():
        raise AnemoneError(f"run.out = {str(out)!r} holds a finished run ({step} of {total_steps} steps, final model in "
                           f"{out / 'model'}): choose another run.out, raise the step count, or pass run.overwrite=true")
    truncate_metrics(out / "metrics.jsonl", step)
    return step, folder


NOT_COMPARED = ("run.overwrite", "run.progress")
"""Fields that do not change what a run computes: a run started with run.overwrite=true resumes without it."""


def _without(config: dict[str, Any], dotted: tuple[str | None, ...]) -> dict[str, Any]:
    """A copy of config without the dotted keys (section.field)."""
    drop: dict[str, set[str]] = {}
    for d in filter(None, dotted):
        section, key = d.split(".")
        drop.setdefault(section, set()).add(key)
    return {k: ({f: v for f, v in s.items() if f not in drop[k]} if k in drop and isinstance(s, dict) else s)
            for k, s in config.items()}


def _with_new_defaults(before: dict[str, Any], now: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`before` with the fields it lacks (section.field) taken from `now` where `now` holds the default."""
    out = dict(before)
    for section, fields in now.items():
        old = before.get(section)
        if not (isinstance(fields, dict) and isinstance(old, dict)):
            continue
        known = defaults.get(section, {})
        added = {f: v for f, v in fields.items() if f not in old and f in known and known[f] == v}
        if added:
            out[section] = old | added
    return out


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after `step` (a killed run logged steps its checkpoint does not hold)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def save_checkpoint(out: Path, step: int, config: dict[str, Any], write: Callable[[Path], None], keep: int) -> Path:
    """`write(tmp_folder)` fills the checkpoint; state.json is added and the folder renamed into place."""
    final = out / "checkpoints" / f"step-{step:06d}"
    with atomic_dir(final, overwrite=True) as tmp:
        write(tmp)
        (tmp / "state.json").write_text(json.dumps({"step": step, "config": config}, indent=2))
    for _, old in checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final
