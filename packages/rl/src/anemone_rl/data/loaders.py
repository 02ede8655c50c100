"""Load prompt rows and preference pairs from JSONL / JSON / Parquet files, `datasets` folders or built-ins.

Prompt rows need `prompt` (a string or chat messages); other fields (e.g. `answer`) go to the environment.
Preference rows are `prompt`/`chosen`/`rejected` strings, or chat form: `chosen`/`rejected` as message lists
(with the prompt as their shared prefix, or given separately in `prompt`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anemone_core.errors import AnemoneError

Messages = list[dict[str, str]]
BUILTIN = {"arithmetic"}


def load_rows(source: str, split: str = "train", field: str = "data.train") -> list[dict[str, Any]]:
    """Rows from `source`: `arithmetic` (shipped, split train/test), a .jsonl/.json/.parquet file, or a folder
    saved by `datasets.Dataset.save_to_disk`. `field` names the config key in error messages."""
    if source in BUILTIN:
        from anemone_rl.data.arithmetic import SPLITS, load_arithmetic

        if split not in SPLITS:
            raise AnemoneError(f"{field} = {source}:{split}: the arithmetic task has splits {sorted(SPLITS)}")
        return load_arithmetic(split)
    if ":" in source and source.split(":")[0] in BUILTIN:
        name, _, sp = source.partition(":")
        return load_rows(name, sp, field)
    path = Path(source).expanduser()
    if not path.exists():
        raise AnemoneError(f"{field} = {source!r}: no such file or folder; give a .jsonl/.json/.parquet file, "
                           f"a datasets folder, or a built-in task ({', '.join(sorted(BUILTIN))}[:train|test])")
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise AnemoneError(f"{field} = {source!r}: line {n} is not JSON ({exc}); fix that line") from None
        return rows
    import datasets

    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
    elif path.suffix in (".json", ".parquet"):
        ds = datasets.load_dataset(path.suffix.lstrip("."), data_files=str(path), split="train")
    else:
        raise AnemoneError(f"{field} = {source!r}: unknown format {path.suffix!r}; use .jsonl, .json or .parquet")
    return [dict(r) for r in ds]


def prompt_messages(row: dict[str, Any], field: str = "data") -> Messages:
    """A row's prompt as chat messages (a plain string becomes one user turn)."""
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt):
        return prompt
    raise AnemoneError(f"{field}: row has prompt={str(prompt)[:60]!r}; every row needs `prompt` as a string or "
                       f"a list of {{role, content}} messages")


def _as_reply(value: Any) -> Messages:
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    return list(value)


def normalize_preference(row: dict[str, Any], field: str = "data") -> tuple[Messages, Messages]:
    """A preference row -> (chosen conversation, rejected conversation), both starting with the prompt."""
    if "chosen" not in row or "rejected" not in row:
        raise AnemoneError(f"{field}: a preference row needs `chosen` and `rejected` (and `prompt` unless they "
                           f"are full conversations); got keys {sorted(row)}")
    prompt = prompt_messages(row, field) if "prompt" in row else []
    return prompt + _as_reply(row["chosen"]), prompt + _as_reply(row["rejected"])
