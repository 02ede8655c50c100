"""Tokenize with any Hugging Face tokenizer and write Megatron-Core's indexed dataset (`.bin` + `.idx`).

The `.idx` layout is megatron-core's `MMIDIDX` version 1: header, dtype code, sequence count, document count,
int32 sequence lengths, int64 byte pointers, int64 document indices (one sequence per document here).
megatron-core itself is not needed to write it; the tests read it back with megatron-core's `IndexedDataset`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anemone_core.errors import AnemoneError
from anemone_curator.stage import Doc, Mapper, Rejected

IDX_HEADER = b"MMIDIDX\x00\x00"
DTYPE_CODES = {
    np.uint8: 1,
    np.int8: 2,
    np.int16: 3,
    np.int32: 4,
    np.int64: 5,
    np.float64: 6,
    np.float32: 7,
    np.uint16: 8,
}


def token_dtype(vocab_size: int) -> type[np.integer]:
    """uint16 while every id fits (halves the file), else int32 (megatron-core's own rule)."""
    return np.uint16 if vocab_size < 65500 else np.int32


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_indexed(
    prefix: str | Path, sequences: Sequence[Sequence[int] | np.ndarray], dtype: type[np.integer]
) -> None:
    """Write `<prefix>.bin` and `<prefix>.idx`, one document per sequence."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    arrays = [np.asarray(s, dtype=dtype) for s in sequences]
    data = b"".join(a.tobytes() for a in arrays)
    _atomic(prefix.with_suffix(".bin"), data)
    lengths = np.array([len(a) for a in arrays], dtype=np.int32)
    _atomic(prefix.with_suffix(".idx"), _index_bytes(lengths, dtype))


class IndexedWriter:
    """Stream documents into `<prefix>.bin` (through a temporary file); `close` renames it and writes `.idx`."""

    def __init__(self, prefix: str | Path, dtype: type[np.integer]) -> None:
        self.prefix, self.dtype = Path(prefix), dtype
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self._bin = self.prefix.with_suffix(".bin")
        self._tmp = self._bin.with_name(f".{self._bin.name}.tmp-{os.getpid()}")
        self._fh = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
        self.lengths: list[int] = []

    def add(self, sequences: Sequence[Sequence[int]]) -> None:
        for seq in sequences:
            self._fh.write(np.asarray(seq, dtype=self.dtype).tobytes())
            self.lengths.append(len(seq))

    def close(self) -> None:
        self._fh.close()
        self._tmp.replace(self._bin)
        _atomic(
            self.prefix.with_suffix(".idx"), _index_bytes(np.array(self.lengths, dtype=np.int32), self.dtype)
        )

    def __enter__(self) -> IndexedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._fh.close()
            self._tmp.unlink(missing_ok=True)


def _index_bytes(lengths: np.ndarray, dtype: type[np.integer]) -> bytes:
    itemsize = np.dtype(dtype).itemsize
    pointers = np.concatenate([[0], np.cumsum(lengths.astype(np.int64) * itemsize)[:-1]]).astype(np.int64)
    if len(lengths) == 0:
        pointers = np.zeros(0, dtype=np.int64)
    doc_idx = np.arange(len(lengths) + 1, dtype=np.int64)  # sequence i is document i
    return b"".join(
        [
            IDX_HEADER,
            struct.pack("<Q", 1),
            struct.pack("<B", DTYPE_CODES[dtype]),
            struct.pack("<Q", len(lengths)),
            struct.pack("<Q", len(doc_idx)),
            lengths.astype(np.int32).tobytes(),
            pointers.tobytes(),
            doc_idx.tobytes(),
        ]
    )


def read_index(prefix: str | Path) -> tuple[type[np.integer], np.ndarray]:
    """(dtype, int32 lengths) of an indexed dataset this module wrote."""
    raw = Path(prefix).with_suffix(".idx").read_bytes()
    assert raw[:9] == IDX_HEADER, "not an MMIDIDX index"
    code = raw[17]
    dtype = {v: k for k, v in DTYPE_CODES.items()}[code]
    (n_seq,) = struct.unpack("<Q", raw[18:26])
    lengths = np.frombuffer(raw, dtype=np.int32, count=n_seq, offset=34)
    return dtype, lengths


def merge_indexed(parts: Sequence[Path], out_prefix: Path) -> int:
    """Concatenate indexed datasets (same dtype) into `out_prefix`; returns the document count."""
    dtype: Any = None
    all_lengths = []
    out_bin = out_prefix.with_suffix(".bin")
    tmp = out_bin.with_name(f".{out_bin.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        for part in parts:
            part_dtype, lengths = read_index(part)
            if dtype is not None and part_dtype != dtype:
                raise ValueError(f"{part} holds {part_dtype}, the others {dtype}")
            dtype = part_dtype
            all_lengths.append(lengths)
            with open(part.with_suffix(".bin"), "rb") as src:
                while chunk := src.read(1 << 24):
                    fh.write(chunk)
    tmp.replace(out_bin)
    lengths = np.concatenate(all_lengths) if all_lengths else np.zeros(0, dtype=np.int32)
    _atomic(out_prefix.with_suffix(".idx"), _index_bytes(lengths, dtype or np.uint16))
    return len(lengths)


class HFTokenizer:
    """A Hugging Face tokenizer folder read with `tokenizers` (tokenizer.json; a fraction of a second to load)
    or, for folders without tokenizer.json (slow tokenizers), with transformers' AutoTokenizer."""

    def __init__(self, folder: Path) -> None:
        import json

        cfg_path = folder / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
        eos = cfg.get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self._hf = None
            self.vocab_size = self._fast.get_vocab_size(with_added_tokens=True)
            self.eos_id = self._fast.token_to_id(eos) if eos else None
        else:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from transformers import AutoTokenizer

            self._fast = None
            self._hf = AutoTokenizer.from_pretrained(str(folder))
            self.vocab_size = len(self._hf)
            self.eos_id = self._hf.eos_token_id

    def encode(self, texts: list[str]) -> list[list[int]]:
        if self._fast is not None:
            return [e.ids for e in self._fast.encode_batch(texts, add_special_tokens=False)]
        return self._hf(texts, add_special_tokens=False)["input_ids"]


def load_tokenizer(folder: str | Path) -> HFTokenizer:
    folder = Path(folder)
    if not folder.is_dir():
        raise AnemoneError(
            f"tokenizer = {folder} is not a folder: give a Hugging Face tokenizer or model folder"
        )
    return HFTokenizer(folder)


class Tokenize(Mapper):
    """Add `tokens` (list of ids, EOS appended) with a Hugging Face tokenizer; the embedded model's by default."""

    name = "tokenize"

    def __init__(self, tokenizer: str | None = None, append_eos: bool = True, batch_size: int = 64) -> None:
        super().__init__()
        self.tokenizer_path, self.append_eos, self.batch_size = tokenizer, append_eos, batch_size
        self._tok: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tok": None}  # workers load their own tokenizer

    @property
    def tok(self) -> Any:
        if self._tok is None:
            from anemone_core.models import resolve_model

            self._tok = load_tokenizer(resolve_model(self.tokenizer_path))
        return self._tok

    def vocab_size(self) -> int:
        return self.tok.vocab_size

    def run(self, docs: list[Doc]) -> tuple[list[Doc], list[Rejected]]:
        eos = [self.tok.eos_id] if self.append_eos and self.tok.eos_id is not None else []
        kept, rejected = [], []
        for i in range(0, len(docs), self.batch_size):
            chunk = docs[i : i + self.batch_size]
            ids = self.tok.encode([d["text"] for d in chunk])
            for doc, seq in zip(chunk, ids, strict=True):
                if not seq:
                    self.stats.dropped["tokenize_empty"] += 1
                    rejected.append(Rejected(doc, self.name, "tokenize_empty"))
                    continue
                doc["tokens"] = list(seq) + eos
                self.stats.counters["tokens"] += len(doc["tokens"])
                kept.append(doc)
        self.stats.docs_in += len(docs)
        self.stats.docs_out += len(kept)
        return kept, rejected
