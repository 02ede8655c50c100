"""Hugging Face checkpoint folders: config.json + tokenizer files + sharded safetensors + index.

This is the exchange format between every Anemone package. Writes are atomic (a temporary folder renamed into
place); reads never unpickle (safetensors only) and report missing, unexpected and mis-shaped tensors by name.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from anemone_core.errors import AnemoneError
from anemone_core.io import atomic_dir, atomic_write_text

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "tokenizer.model", "added_tokens.json", "chat_template.jinja", "chat_template.json", "generation_config.json",
)
DEFAULT_SHARD_BYTES = 2 * 1024**3


class ShardedWriter:
    """Streams tensors into safetensors shards of at most `max_shard_bytes`, then writes the index.

    Memory stays at one shard's worth: a shard is written as soon as the next tensor would overflow it.
    Use inside `atomic_dir` so a crash leaves nothing behind.
    """

    def __init__(self, folder: Path, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
        self.folder = Path(folder)
        self.max_shard_bytes = max_shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[tuple[str, list[str]]] = []  # (temporary file name, tensor names)
        self._seen: set[str] = set()
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self._seen:
            raise AnemoneError(f"tensor '{name}' written twice: a conversion mapped two sources to one name")
        self._seen.add(name)
        nbytes = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + nbytes > self.max_shard_bytes:
            self._flush()
        # safetensors refuses views of shared storage (tied weights): store an owning contiguous copy if needed.
        self._pending[name] = tensor.detach().to("cpu").contiguous()
        self._pending_bytes += nbytes
        self.total_bytes += nbytes

    def _flush(self) -> None:
        if not self._pending:
            return
        tmp_name = f".shard-{len(self._shards):05d}.safetensors"
        tensors = {k: (v.clone() if _shares_storage(v, self._pending, k) else v) for k, v in self._pending.items()}
        save_file(tensors, str(self.folder / tmp_name), metadata={"format": "pt"})
        self._shards.append((tmp_name, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> list[str]:
        """Write the last shard, give shards their final names, write the index. Returns the file names."""
        self._flush()
        n = len(self._shards)
        if n == 0:
            raise AnemoneError("no tensors were written: the source checkpoint is empty")
        if n == 1:
            os.replace(self.folder / self._shards[0][0], self.folder / SINGLE)
            return [SINGLE]
        weight_map: dict[str, str] = {}
        names = []
        for i, (tmp_name, keys) in enumerate(self._shards):
            final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            os.replace(self.folder / tmp_name, self.folder / final)
            names.append(final)
            weight_map.update({k: final for k in keys})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        atomic_write_text(self.folder / INDEX, json.dumps(index, indent=2))
        return names + [INDEX]


def _shares_storage(t: torch.Tensor, group: Mapping[str, torch.Tensor], name: str) -> bool:
    ptr = t.untyped_storage().data_ptr()
    return any(k != name and v.untyped_storage().data_ptr() == ptr for k, v in group.items() if k < name)


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return config.to_dict()
    raise TypeError(f"config must be a mapping or have to_dict(), got {type(config).__name__}")


def copy_tokenizer_files(src: str | os.PathLike, dst: str | os.PathLike) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dst) / name)
            copied.append(name)
    return copied


def save_hf_folder(
    tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    out: str | os.PathLike,
    config: Any = None,
    tokenizer_from: str | os.PathLike | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    overwrite: bool = False,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write an HF folder atomically. `tensors` may be a dict or a generator of (name, tensor) pairs, which
    is consumed shard by shard (a streaming converter never holds the whole model)."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    with atomic_dir(out, overwrite=overwrite) as tmp:
        writer = ShardedWriter(tmp, max_shard_bytes)
        for name, tensor in items:
            writer.add(name, tensor)
        writer.close()
        cfg = _config_dict(config)
        if cfg:
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str) + "\n")
        if tokenizer_from is not None:
            copy_tokenizer_files(tokenizer_from, tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return Path(out)


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The safetensors files of an HF folder, in index order. Refuses pickle-only checkpoints."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AnemoneError(f"checkpoint folder '{folder}' does not exist: check the path")
    index = folder / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as exc:
            raise AnemoneError(f"'{index}' is not a valid safetensors index ({exc}): re-save the checkpoint") from None
        files = list(dict.fromkeys(weight_map.values()))
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise AnemoneError(f"'{index}' lists shards that are missing from {folder}: {missing}; copy them or re-save")
        return [folder / f for f in files]
    if (folder / SINGLE).is_file():
        return [folder / SINGLE]
    found = sorted(folder.glob("*.safetensors"))
    if found:
        return found
    if list(folder.glob("*.bin")) or list(folder.glob("*.pt")):
        raise AnemoneError(
            f"'{folder}' holds only pickle checkpoints (*.bin/*.pt), which Anemone never unpickles: convert them "
            "to safetensors with a tool you trust (e.g. transformers `save_pretrained(safe_serialization=True)`)"
        )
    raise AnemoneError(f"'{folder}' holds no *.safetensors weights: give a Hugging Face model folder")


def iter_hf_tensors(folder: str | os.PathLike, names: Iterable[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Stream (name, tensor) from every shard, one tensor in memory at a time (optionally only `names`)."""
    wanted = set(names) if names is not None else None
    for path in weight_files(folder):
        try:
            with safe_open(str(path), framework="pt") as fh:
                for key in fh.keys():
                    if wanted is None or key in wanted:
                        yield key, fh.get_tensor(key)
        except (SafetensorError, OSError) as exc:
            raise AnemoneError(f"cannot read '{path}': {exc}. The file is corrupt or truncated: re-download or re-save it") from None


def read_shapes(folder: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the safetensors headers, without reading any data."""
    shapes = {}
    for path in weight_files(folder):
        try:
            with safe_open(str(path), framework="pt") as fh:
                for key in fh.keys():
                    shapes[key] = tuple(fh.get_slice(key).get_shape())
        except (SafetensorError, OSError) as exc:
            raise AnemoneError(f"cannot read '{path}': {exc}. The file is corrupt or truncated: re-download or re-save it") from None
    return shapes


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # name, got, want

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 20) -> str:
        def cut(items: list[Any]) -> str:
            return ", ".join(map(str, items[:limit])) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")

        parts = []
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {cut(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)}: {cut(self.unexpected)}")
        if self.mismatched:
            parts.append(f"shape mismatch {len(self.mismatched)}: " + cut([f"{n} has {g}, expected {w}" for n, g, w in self.mismatched]))
        return "; ".join(parts)


def compare_keys(found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]],
                 allow_missing: Iterable[str] = ()) -> LoadReport:
    patterns = list(allow_missing)
    report = LoadReport()
    report.missing = sorted(k for k in expected if k not in found and not any(fnmatch.fnmatch(k, p) for p in patterns))
    report.unexpected = sorted(k for k in found if k not in expected)
    report.mismatched = sorted((k, tuple(found[k]), tuple(expected[k])) for k in expected
                               if k in found and tuple(found[k]) != tuple(expected[k]))
    return report


def load_hf_state_dict(folder: str | os.PathLike, expected: Mapping[str, Any] | None = None,
                       allow_missing: Iterable[str] = (), strict: bool = True) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Load every tensor of an HF folder. With `expected` ({name: shape or tensor}), compare names and shapes
    first (from headers, before reading data) and, if `strict`, raise naming each missing/unexpected/mismatched one."""
    report = LoadReport()
    if expected is not None:
        want = {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in expected.items()}
        report = compare_keys(read_shapes(folder), want, allow_missing)
        if strict and not report.ok:
            raise AnemoneError(f"checkpoint '{folder}' does not match the model: {report.describe()}")
    return dict(iter_hf_tensors(folder)), report
