"""Writing an HF folder from a stream of (name, tensor), shard by shard, atomically, from one rank."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from anemone_core.checkpoint import DEFAULT_SHARD_BYTES, ShardedWriter, copy_tokenizer_files
from anemone_core.io import atomic_dir


def write_hf_folder(items: Iterable[tuple[str, torch.Tensor]], path: str | Path, hf_config: Any,
                    tokenizer_from: str | Path | None = None, overwrite: bool = False,
                    max_shard_bytes: int | None = None, is_writer: bool = True) -> Path:
    """Consume `items` on every rank; only the writer rank writes. Memory: one shard at a time."""
    if not is_writer:
        for _ in items:  # the other ranks' part of the stream: sending shards to the writer
            pass
        return Path(path)
    with atomic_dir(path, overwrite=overwrite) as tmp:
        writer = ShardedWriter(tmp, max_shard_bytes or DEFAULT_SHARD_BYTES)
        for name, tensor in items:
            writer.add(name, tensor)
        writer.close()
        hf_config.save_pretrained(str(tmp))
        if tokenizer_from is not None and Path(tokenizer_from).is_dir():
            copy_tokenizer_files(tokenizer_from, tmp)
    return Path(path)
