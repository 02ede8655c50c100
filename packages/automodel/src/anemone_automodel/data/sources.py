"""Rows from local files (through `datasets`) or the built-in set, tokenized into training examples.

An example is {"input_ids": list[int], "labels": list[int]}; labels are -100 where no loss is taken.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anemone_automodel.data.builtin import builtin_chats, builtin_text
from anemone_automodel.data.chat import (
    check_messages,
    tokenize_chat,
    tokenize_prompt_completion,
    tokenize_text,
)
from anemone_core.errors import AnemoneError
from anemone_core.metrics import progress

FORMATS = ("messages", "prompt_completion", "text")
_LOADERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def read_rows(path: str | None, fmt: str = "auto", max_examples: int | None = None) -> Any:
    """A `datasets.Dataset` of the file's rows (None: the built-in set, chats or text by `fmt`)."""
    import datasets

    datasets.disable_progress_bars()
    if path is None:
        rows = builtin_text() if fmt == "text" else builtin_chats()
        ds = datasets.Dataset.from_list(rows)
    else:
        p = Path(path).expanduser()
        if not p.is_file():
            raise AnemoneError(f"data.path = {path!r} is not a file: give a local .jsonl, .json, .parquet or .csv file "
                               "(or a Megatron prefix with data.format=megatron)")
        loader = _LOADERS.get(p.suffix.lower())
        if loader is None:
            raise AnemoneError(f"data.path = {path!r} has suffix {p.suffix!r}: use one of {sorted(_LOADERS)}")
        try:
            ds = datasets.load_dataset(loader, data_files=str(p), split="train")
        except Exception as exc:  # datasets wraps parse errors in several types
            raise AnemoneError(f"data.path = {path!r} could not be read as {loader}: {exc}. Fix the file "
                               "(one JSON object per line for .jsonl)") from None
    if max_examples is not None:
        ds = ds.select(range(min(max_examples, len(ds))))
    if len(ds) == 0:
        raise AnemoneError(f"data.path = {path!r} holds no rows: give a file with at least one example")
    return ds


def detect_format(columns: list[str], fmt: str, text_field: str = "text") -> str:
    if fmt != "auto":
        need = {"messages": ["messages"], "prompt_completion": ["prompt", "completion"], "text": [text_field]}[fmt]
        missing = [c for c in need if c not in columns]
        if missing:
            raise AnemoneError(f"data.format = {fmt} needs the column(s) {missing}, but the rows have {columns}: "
                               "fix the rows or pick the matching data.format")
        return fmt
    if "messages" in columns:
        return "messages"
    if "prompt" in columns and "completion" in columns:
        return "prompt_completion"
    if text_field in columns:
        return "text"
    raise AnemoneError(f"rows have the columns {columns} but need 'messages' (chat), 'prompt' + 'completion', or "
                       f"'{text_field}' (raw text): rename the column or set data.format / data.text_field")


def chunk_examples(examples: list[dict], seq_len: int) -> list[dict]:
    """Cut every example into consecutive pieces of at most `seq_len` tokens (pieces of one token dropped)."""
    out = []
    for e in examples:
        for i in range(0, len(e["input_ids"]), seq_len):
            if len(e["input_ids"][i : i + seq_len]) > 1:
                out.append({"input_ids": e["input_ids"][i : i + seq_len], "labels": e["labels"][i : i + seq_len]})
    return out


def tokenize_rows(tokenizer: Any, ds: Any, fmt: str, seq_len: int | None, text_field: str = "text") -> list[dict]:
    """Tokenize every row; a bad row fails with its index and the fix."""
    fmt = detect_format(list(ds.column_names), fmt, text_field)

    def one(row: dict, idx: int) -> dict:
        where = f"data row {idx}"
        if fmt == "messages":
            msgs = row["messages"]
            if msgs is None:
                raise AnemoneError(f"{where} has no 'messages' (null or absent): every row needs a messages list; "
                                   "fix or drop that row")
            return tokenize_chat(tokenizer, check_messages(msgs, where), seq_len)
        if fmt == "prompt_completion":
            if row.get("prompt") is None or row.get("completion") is None:
                raise AnemoneError(f"{where} lacks 'prompt' or 'completion': every row needs both; fix or drop it")
            return tokenize_prompt_completion(tokenizer, row["prompt"], row["completion"], seq_len)
        text = row.get(text_field)
        if not isinstance(text, str):
            raise AnemoneError(f"{where}: '{text_field}' = {text!r:.60} is not a string: fix or drop that row")
        return tokenize_text(tokenizer, text, seq_len)

    examples = [one(row, idx) for idx, row in enumerate(progress(ds, total=len(ds), description="tokenizing"))]
    if seq_len is not None and not any(any(x != -100 for x in e["labels"][1:]) for e in examples):
        raise AnemoneError(f"no example has a trained token within data.seq_len = {seq_len}: raise seq_len "
                           "(the prompts fill every sequence)")
    return examples
