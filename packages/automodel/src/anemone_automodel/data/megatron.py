"""Read Megatron-Core indexed datasets (`prefix.bin` + `prefix.idx`, the MMIDIDX format) with numpy memmap.

Index layout (megatron.core.datasets.indexed_dataset): header b"MMIDIDX\\x00\\x00", version <Q (1), dtype code
<B, sequence count <Q, document count <Q, sequence lengths int32[S], sequence byte pointers int64[S],
document indices int64[D] (sequence index where each document starts, with the total at the end),
optionally sequence modes int8[S]. A document is the concatenation of its sequences.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from anemone_core.errors import AnemoneError

HEADER = b"MMIDIDX\x00\x00"
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16}


def read_index(idx_path: Path) -> tuple[np.dtype, np.ndarray, np.ndarray, np.ndarray]:
    """(token dtype, sequence lengths, sequence byte pointers, document indices)."""
    buf = np.memmap(idx_path, mode="r", dtype=np.uint8)
    if bytes(buf[:9]) != HEADER:
        raise AnemoneError(f"{idx_path} is not a Megatron index (header {bytes(buf[:9])!r}, expected {HEADER!r}): "
                           "give the prefix of a .bin/.idx pair written by megatron-core or `anemone curator`")
    version, = struct.unpack("<Q", bytes(buf[9:17]))
    code, = struct.unpack("<B", bytes(buf[17:18]))
    n_seq, n_doc = struct.unpack("<QQ", bytes(buf[18:34]))
    if version != 1 or code not in DTYPES:
        raise AnemoneError(f"{idx_path}: unsupported index version {version} or dtype code {code}")
    off = 34
    lengths = np.frombuffer(buf, dtype=np.int32, count=n_seq, offset=off)
    off += 4 * n_seq
    pointers = np.frombuffer(buf, dtype=np.int64, count=n_seq, offset=off)
    off += 8 * n_seq
    docs = np.frombuffer(buf, dtype=np.int64, count=n_doc, offset=off)
    return np.dtype(DTYPES[code]), lengths, pointers, docs


def read_megatron_documents(prefix: str, seq_len: int, max_examples: int | None = None) -> list[dict]:
    """Every document as training examples of at most `seq_len` tokens (long documents are chunked, every
    token trained)."""
    base = Path(prefix).expanduser()
    base = base.with_suffix("") if base.suffix in (".bin", ".idx") else base
    idx, bin_ = Path(f"{base}.idx"), Path(f"{base}.bin")
    if not idx.is_file() or not bin_.is_file():
        raise AnemoneError(f"data.path = {prefix!r}: {idx.name} and {bin_.name} must both exist for "
                           "data.format=megatron: give the prefix without the suffix")
    dtype, lengths, pointers, docs = read_index(idx)
    tokens = np.memmap(bin_, mode="r", dtype=dtype)
    examples: list[dict] = []
    bounds = list(docs) if len(docs) and docs[-1] == len(lengths) else [*docs, len(lengths)]
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        if end <= start:
            continue
        first = int(pointers[start]) // dtype.itemsize
        last = int(pointers[end - 1]) // dtype.itemsize + int(lengths[end - 1])
        doc = tokens[first:last].astype(np.int64).tolist()
        for i in range(0, len(doc), seq_len):
            piece = doc[i : i + seq_len]
            if len(piece) > 1:
                examples.append({"input_ids": piece, "labels": list(piece)})
            if max_examples is not None and len(examples) >= max_examples:
                return examples
    if not examples:
        raise AnemoneError(f"data.path = {prefix!r} holds no document of 2 or more tokens: check the dataset")
    return examples
