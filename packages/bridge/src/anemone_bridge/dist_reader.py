"""Reading the tensors of a megatron-core `torch_dist` checkpoint straight from its files, in one process.

The files are torch DCP's: `.metadata` (a pickle: every key's global shape and stored chunks, and where each
chunk lies: file, offset, length) and `__*.distcp` files, each chunk a `torch.save` zip archive at its offset.
torch DCP's `FileSystemReader` reads a chunk's bytes into a buffer, `torch.load`s that into a new tensor and
copies the requested part into the caller's tensor: three copies of every byte (1.4 s CPU of a 4.7 s export of
a 1.4 GB model here, plus megatron's cat of the two halves of every gated MLP weight). Here a chunk is mapped
from its file (copy-on-write `mmap`, so the page cache is used in place) and `torch.load`'s own reader builds
the tensor on that mapping, as `torch.load(path, mmap=True)` does for a whole file: a region that is one
stored chunk costs no copy; a region made of several chunks (another TP layout, a gated weight's halves) is
copied once into a new tensor. Each mapping is released with the last tensor that uses it.

Safety: `.metadata` is unpickled with an allow-list of the DCP metadata classes (`_MetadataUnpickler`);
chunks go through torch's `weights_only` unpickler; a chunk must lie inside its file (checked before mapping:
reading a mapping past the end of a file would kill the process with SIGBUS).
"""

from __future__ import annotations

import io
import math
import mmap
import pickle
from pathlib import Path
from typing import Any

import torch

from anemone_core.errors import AnemoneError

# (module, name) pairs the DCP `.metadata` pickle may name (what torch 2.13 writes; `_get_layout` maps a
# layout name such as "torch.strided" to the layout)
_ALLOWED = {
    ("torch.distributed.checkpoint.metadata", n) for n in (
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata", "TensorProperties",
        "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"), ("collections", "OrderedDict"),
    ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"), ("builtins", "set"),
    ("torch.serialization", "_get_layout"),
}
_TORCH_ATTRS = (torch.dtype, torch.layout, torch.memory_format)


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), _TORCH_ATTRS):
            return getattr(torch, name)  # torch.float32, torch.strided, torch.contiguous_format, ...
        raise _Refused(f"its .metadata names '{module}.{name}'")


class _Refused(pickle.UnpicklingError):
    """A `.metadata` pickle that names something outside the allow-list."""


class _View(io.RawIOBase):
    """A read-only, seekable file over a memoryview (what torch's zip reader needs), without copying it."""

    def __init__(self, buf: memoryview) -> None:
        self.buf, self.pos = buf, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else self.pos + pos if whence == 1 else len(self.buf) + pos
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, b: Any) -> int:
        n = min(len(b), len(self.buf) - self.pos)
        b[:n] = self.buf[self.pos:self.pos + n]
        self.pos += n
        return n


class DistCheckpointReader:
    """Global regions of the tensors of one torch_dist checkpoint folder (one process, CPU)."""

    def __init__(self, folder: str | Path) -> None:
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        self.folder = Path(folder)
        path = self.folder / ".metadata"
        try:
            with path.open("rb") as fh:
                md = _MetadataUnpickler(fh).load()
        except _Refused as exc:
            raise AnemoneError(f"cannot read the Megatron checkpoint '{self.folder}': {exc}; only torch DCP's own "
                               "metadata classes are unpickled. If the checkpoint comes from a source you trust, "
                               "an export on 2+ ranks (`--tp 2`, ...) reads it through megatron-core's loader, "
                               "which unpickles it without this check") from None
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError) as exc:
            raise _damaged(self.folder, exc) from None
        self.tensors = {k: v for k, v in md.state_dict_metadata.items() if isinstance(v, TensorStorageMetadata)}
        self.where = {(idx.fqn, tuple(idx.offset)): info for idx, info in md.storage_data.items()
                      if idx.offset is not None}
        self._chunks = {k: {tuple(c.offsets): c for c in v.chunks} for k, v in self.tensors.items()}
        self._sizes: dict[str, int] = {}

    def read(self, key: str, offsets: tuple[int, ...], sizes: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """The region [offsets, offsets + sizes) of the stored global tensor `key`."""
        md = self.tensors.get(key)
        if md is None:
            raise AnemoneError(f"the Megatron checkpoint '{self.folder}' has no tensor '{key}': it was written for "
                               "another architecture or is incomplete; re-import it")
        if md.properties.dtype != dtype or len(md.size) != len(sizes):
            raise AnemoneError(f"the Megatron checkpoint '{self.folder}' holds '{key}' as {md.properties.dtype} "
                               f"{tuple(md.size)}, this model expects {dtype} with {len(sizes)} dims: it was written "
                               "for another model; re-import it")
        exact = self._chunks[key].get(tuple(offsets))
        if exact is not None and tuple(exact.sizes) == tuple(sizes):
            return self._chunk(key, exact)  # the region is one stored chunk: no copy
        end = tuple(o + s for o, s in zip(offsets, sizes, strict=True))
        parts = []
        for chunk in md.chunks:
            lo = tuple(max(a, b) for a, b in zip(offsets, chunk.offsets, strict=True))
            hi = tuple(min(a, b + c) for a, b, c in zip(end, chunk.offsets, chunk.sizes, strict=True))
            if all(a < b for a, b in zip(lo, hi, strict=True)):
                parts.append((chunk, lo, hi))
        out = torch.empty(sizes, dtype=dtype)
        covered = 0
        for chunk, lo, hi in parts:
            src = self._chunk(key, chunk)
            src = src[tuple(slice(a - c, b - c) for a, b, c in zip(lo, hi, chunk.offsets, strict=True))]
            out[tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, offsets, strict=True))] = src
            covered += math.prod(b - a for a, b in zip(lo, hi, strict=True))
        if covered != math.prod(sizes):  # DCP stores each element once, so a shortfall is a gap
            raise AnemoneError(f"the Megatron checkpoint '{self.folder}' covers {covered} of the "
                               f"{math.prod(sizes)} elements of '{key}' at {offsets}: it is incomplete; re-import it")
        return out

    def _chunk(self, key: str, chunk: Any) -> torch.Tensor:
        """One stored chunk, as a tensor on a copy-on-write mapping of its bytes in the file."""
        info = self.where.get((key, tuple(chunk.offsets)))
        if info is None or getattr(info, "transform_descriptors", None):
            why = "no storage entry" if info is None else f"stored with transforms {info.transform_descriptors}"
            raise _damaged(self.folder, ValueError(f"chunk of '{key}' at {tuple(chunk.offsets)}: {why}"))
        path = self.folder / info.relative_path
        try:
            size = self._sizes.get(info.relative_path)
            if size is None:
                size = self._sizes[info.relative_path] = path.stat().st_size
            if info.offset + info.length > size:
                raise EOFError(f"'{path.name}' has {size} bytes, a chunk of '{key}' ends at byte "
                               f"{info.offset + info.length}")
            start = info.offset - info.offset % mmap.ALLOCATIONGRANULARITY
            with path.open("rb") as fh:
                mapped = mmap.mmap(fh.fileno(), info.offset + info.length - start, offset=start,
                                   access=mmap.ACCESS_COPY)
            # a uint8 tensor whose storage starts at the chunk's first byte (it keeps the mapping alive)
            storage = torch.frombuffer(mapped, dtype=torch.uint8, offset=info.offset - start).untyped_storage()
            view = memoryview(mapped)[info.offset - start:]
            with torch.serialization._open_zipfile_reader(_View(view)) as zf:
                tensor = torch.serialization._load(zf, None, torch._weights_only_unpickler,
                                                   overall_storage=storage)
            del view
        except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
            raise _damaged(self.folder, exc) from None
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != tuple(chunk.sizes):
            raise _damaged(self.folder, ValueError(f"chunk of '{key}' at {tuple(chunk.offsets)} is not a tensor of "
                                                   f"shape {tuple(chunk.sizes)}"))
        return tensor


def _damaged(folder: Path, exc: BaseException) -> AnemoneError:
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return AnemoneError(f"cannot read the Megatron checkpoint '{folder}' ({type(exc).__name__}: {first}): a file is "
                        "missing, truncated or corrupt; re-import it with `anemone bridge import`")


def read_sharded(reader: DistCheckpointReader, sharded_state_dict: dict[str, Any], merge: bool = True
                 ) -> dict[str, Any]:
    """`dist_checkpointing.load` of megatron ShardedTensors (and factories, e.g. the gated MLP weight stored
    as two halves) through `reader`: megatron-core's own pre- and post-processing, our reads in between.
    `merge=False` leaves a factory's value as the list of its parts (what its `merge_fn` would combine)."""
    from megatron.core.dist_checkpointing.dict_utils import dict_list_map_inplace
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, apply_factory_merges
    from megatron.core.dist_checkpointing.state_dict_utils import load_preprocess

    state, _, factories = load_preprocess(sharded_state_dict)

    def load(sh: Any) -> Any:
        if not isinstance(sh, ShardedTensor) or sh.flattened_range is not None:
            raise AssertionError(f"read_sharded reads whole ShardedTensors, got {type(sh).__name__} for "
                                 f"{getattr(sh, 'key', '?')}")
        sizes = (1,) * sh.prepend_axis_num + tuple(sh.local_shape)
        return reader.read(sh.key, tuple(sh.global_offset), sizes, sh.dtype).view(sh.local_shape)

    dict_list_map_inplace(load, state)
    return apply_factory_merges(state, factories) if merge else state
