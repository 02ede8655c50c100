"""Writing an HF folder from a stream of (name, tensor), atomically, from one rank.

Two writers:
- `anemone_core.checkpoint.ShardedWriter` holds up to one shard of tensors before writing it (used when the
  names and shapes are not known in advance);
- `PlannedShardWriter` (here) is given every (name, shape, dtype) up front, writes each file's safetensors
  header first and then each tensor's bytes the moment it arrives, so it holds no tensor at all: the memory
  of an export no longer depends on the shard size. The files are plain safetensors (read back by
  `safetensors` and transformers in the tests).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from anemone_core.checkpoint import DEFAULT_SHARD_BYTES, INDEX, SINGLE, ShardedWriter, copy_tokenizer_files
from anemone_core.io import atomic_dir, atomic_write_text

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * torch.empty((), dtype=self.dtype).element_size()


class PlannedShardWriter:
    """Streams tensors, in the planned order, straight into safetensors files of at most `max_shard_bytes`."""

    def __init__(self, folder: Path, plan: list[PlannedTensor], max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
        self.folder = Path(folder)
        self.files: list[list[PlannedTensor]] = [[]]
        size = 0
        for item in plan:
            if self.files[-1] and size + item.nbytes > max_shard_bytes:
                self.files.append([])
                size = 0
            self.files[-1].append(item)
            size += item.nbytes
        n = len(self.files)
        self.names = [SINGLE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self._order = [(f, item) for f, items in enumerate(self.files) for item in items]
        self._next = 0
        self._fh: BinaryIO | None = None
        self._file = -1

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if self._next >= len(self._order):
            raise AssertionError(f"tensor '{name}' is beyond the planned {len(self._order)} tensors")
        f, item = self._order[self._next]
        if (name, tuple(tensor.shape), tensor.dtype) != (item.name, item.shape, item.dtype):
            raise AssertionError(f"stream gave {name} {tuple(tensor.shape)} {tensor.dtype}, plan says {item}")
        if f != self._file:
            self._open(f)
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)  # raw bytes, no copy if possible
        assert self._fh is not None
        self._fh.write(data.numpy().data)
        self._next += 1

    def _open(self, f: int) -> None:
        self._close_file()
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for item in self.files[f]:
            header[item.name] = {"dtype": _DTYPES[item.dtype], "shape": list(item.shape),
                                 "data_offsets": [offset, offset + item.nbytes]}
            offset += item.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
        self._fh = open(self.folder / self.names[f], "wb")  # noqa: SIM115 (closed in _close_file)
        self._fh.write(len(raw).to_bytes(8, "little") + raw)
        self._file = f

    def _close_file(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def close(self) -> list[str]:
        """Finish the last file and write the index (more than one file). Returns the file names."""
        self._close_file()
        if self._next != len(self._order):
            missing = [item.name for _, item in self._order[self._next:]]
            raise AssertionError(f"the stream ended before {len(missing)} planned tensor(s): {missing[:5]}")
        if len(self.names) == 1:
            return self.names
        weight_map = {item.name: self.names[f] for f, item in self._order}
        total = sum(item.nbytes for _, item in self._order)
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        atomic_write_text(self.folder / INDEX, json.dumps(index, indent=2))
        return [*self.names, INDEX]


def write_hf_folder(items: Iterable[tuple[str, torch.Tensor]], path: str | Path, hf_config: Any,
                    tokenizer_from: str | Path | None = None, overwrite: bool = False,
                    max_shard_bytes: int | None = None, is_writer: bool = True,
                    plan: list[PlannedTensor] | None = None) -> Path:
    """Consume `items` on every rank; only the writer rank writes. With a `plan` (every tensor's name, shape
    and dtype, in stream order) no tensor is held; without, one shard's worth is."""
    if not is_writer:
        for _ in items:  # the other ranks' part of the stream: sending shards to the writer
            pass
        return Path(path)
    with atomic_dir(path, overwrite=overwrite) as tmp:
        shard = max_shard_bytes or DEFAULT_SHARD_BYTES
        writer = PlannedShardWriter(tmp, plan, shard) if plan is not None else ShardedWriter(tmp, shard)
        for name, tensor in items:
            writer.add(name, tensor)
        writer.close()
        hf_config.save_pretrained(str(tmp))
        if tokenizer_from is not None and Path(tokenizer_from).is_dir():
            copy_tokenizer_files(tokenizer_from, tmp)
    return Path(path)
