"""Local task data: JSONL, JSON, CSV and Parquet files, or a `datasets.save_to_disk` folder, as lists of dicts.

Nothing is downloaded. A `datasets` folder is read with pyarrow directly (its `.arrow` files are Arrow IPC
streams), so the `datasets` library is not needed to evaluate on one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anemone_core.errors import AnemoneError

_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


def resolve_data_path(raw: str, base: Path | None) -> Path:
    """A data file named in a task YAML: relative to the YAML's folder first, then to the working directory."""
    p = Path(raw).expanduser()
    candidates = [p] if p.is_absolute() else [*([base / p] if base else []), Path.cwd() / p]
    for c in candidates:
        if c.exists():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise AnemoneError(f"task data file '{raw}' not found (tried {tried}): fix data_files in the task YAML")


def read_json_rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise AnemoneError(f"{path} line {i} is not valid JSON ({exc.msg}): fix or remove that row") from None
    bad = [i for i, r in enumerate(rows) if not isinstance(r, dict)]
    if bad:
        raise AnemoneError(f"{path} row {bad[0]} is not a JSON object: every row must be a mapping of fields")
    return rows


def read_arrow_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        try:
            table = pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            table = pa.ipc.open_file(source).read_all()
    return table.to_pylist()


def read_rows(path: Path, fmt: str | None = None) -> list[dict[str, Any]]:
    """Rows of one file (format from `fmt` or the suffix) or of a `datasets` split folder."""
    if path.is_dir():
        files = sorted(path.glob("*.arrow")) or sorted(path.glob("*.parquet")) or sorted(path.glob("*.jsonl"))
        if not files:
            raise AnemoneError(f"data folder {path} holds no .arrow, .parquet or .jsonl files: give a file or a "
                               "`datasets.save_to_disk` split folder")
        return [row for f in files for row in read_rows(f)]
    kind = fmt if fmt in ("json", "parquet", "csv", "arrow") else _FORMATS.get(path.suffix)
    if kind == "json":
        return read_json_rows(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if kind == "csv":
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path).to_pylist()
    if kind == "arrow":
        return read_arrow_rows(path)
    raise AnemoneError(f"data file {path}: unknown format '{path.suffix}': use .jsonl, .json, .csv, .parquet or .arrow")


def load_split(dataset_path: str, data_files: dict[str, Any] | str | list[str] | None, split: str,
               base: Path | None) -> list[dict[str, Any]]:
    """The rows of `split`, from lm-eval-style `dataset_path` + `dataset_kwargs.data_files` (local only)."""
    if data_files is not None:
        files = data_files if isinstance(data_files, dict) else {"train": data_files}
        if split not in files:
            raise AnemoneError(f"split '{split}' is not in data_files (has {sorted(files)}): set test_split to one "
                               "of them")
        named = files[split]
        paths = [named] if isinstance(named, str) else list(named)
        return [r for p in paths for r in read_rows(resolve_data_path(p, base), fmt=dataset_path)]
    folder = resolve_data_path(dataset_path, base)
    if folder.is_file():
        return read_rows(folder)
    if (folder / split).is_dir():  # a DatasetDict saved with save_to_disk
        return read_rows(folder / split)
    for suffix in (".jsonl", ".parquet", ".json", ".csv"):
        cand = [f for f in folder.glob(f"{split}*{suffix}")]
        if cand:
            return [r for f in sorted(cand) for r in read_rows(f)]
    raise AnemoneError(f"no split '{split}' under {folder}: expected {folder}/{split}/ (datasets.save_to_disk) or "
                       f"{split}*.jsonl / .parquet files; or set dataset_kwargs.data_files")
