"""Megatron checkpoints through megatron-core `dist_checkpointing` (torch_dist backend): a folder written at
one TP/PP/EP loads at another (the sharded state dict carries global offsets; resharding is the library's).

Folder layout (the dist_checkpointing files at the top, so megatron-core tools read it as is):

    out/
      metadata.json, common.pt, __*.distcp     megatron-core dist_checkpointing (torch DCP underneath)
      hf/config.json + tokenizer files         the source model's HF config, to rebuild and export it
      anemone_bridge.json                      architecture, saved layout, vocab sizes

Reading never unpickles arbitrary objects: megatron-core loads `common.pt` with `torch.load`, whose default
in torch >= 2.6 is `weights_only=True`.

Saving goes through `dist_checkpointing.save` with our `InProcessTorchDistSave` strategy (`in_process_save_strategy_class`): the same torch_dist
format, written by torch DCP's `FileSystemWriter` in this process. megatron's default strategy is built for
asynchronous saves during training: it starts a `multiprocessing` manager with the *spawn* method (a fresh
interpreter, which re-imports the caller's `__main__`) and forks writer processes, which cost more than the
whole write for a one-off conversion (measured in the README).
"""

from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path
from typing import Any

import torch

from anemone_core.errors import AnemoneError

META = "anemone_bridge.json"
FORMAT = 1


def save_megatron(model: torch.nn.Module, folder: str | Path, meta: dict[str, Any],
                  gated_parts: dict[int, list[torch.Tensor]] | None = None) -> None:
    """Save this rank's part (collective: every rank calls it with the same `folder`). Rank 0 writes META.

    `gated_parts`: the halves of gated MLP weights left unfilled in the model (`weights.load_hf_weights`)."""
    import torch.distributed as dist
    from megatron.core import dist_checkpointing

    folder = Path(folder)
    state = model.sharded_state_dict()
    if gated_parts:
        _save_halves_as_given(state, gated_parts)
    dist_checkpointing.save(state, str(folder), sharded_strategy=in_process_save_strategy_class()())
    if dist.get_rank() == 0:
        (folder / META).write_text(json.dumps({"format": FORMAT, **meta}, indent=2))
    dist.barrier()


def _save_halves_as_given(state: dict[str, Any], gated_parts: dict[int, list[torch.Tensor]]) -> None:
    """Replace the gated MLP weights' factories by their two ShardedTensors, holding the given halves.

    megatron-core saves a gated weight [gate; up] through a `ShardedTensorFactory` whose build splits the
    parameter into its two halves along dim 0 (two chunks in the checkpoint). Building the parameter by
    concatenating the HF gate and up tensors only for the save to split it again (and torch DCP to clone
    each half, a view into a larger storage) copied the gated weights twice: 0.5 s CPU and ~1.3 GB of peak
    memory for a 1.4 GB model here. The factory is built on the (unfilled) parameter and each part's data is
    checked to be the half the given tensor replaces, so the checkpoint is the one megatron writes."""
    from megatron.core.dist_checkpointing.dict_utils import dict_list_map_inplace
    from megatron.core.dist_checkpointing.mapping import ShardedTensorFactory

    done = set()

    def build(x: Any) -> Any:
        if not isinstance(x, ShardedTensorFactory) or x.data is None or x.data.data_ptr() not in gated_parts:
            return x
        halves, param = gated_parts[x.data.data_ptr()], x.data
        parts = x.build()
        step = param[: param.shape[0] // 2].nbytes
        ok = (isinstance(parts, list) and len(parts) == 2 and param.is_contiguous()
              and [p.data.data_ptr() for p in parts] == [param.data_ptr(), param.data_ptr() + step]
              and all(p.data.shape == h.shape and p.data.dtype == h.dtype for p, h in zip(parts, halves, strict=True)))
        if not ok:
            raise AssertionError(f"megatron-core's factory for '{x.key}' does not split the parameter into its two "
                                 "halves along dim 0; the gated weight cannot be saved from its halves")
        for part, half in zip(parts, halves, strict=True):
            part.data = half
        done.add(param.data_ptr())
        return parts

    dict_list_map_inplace(build, state)
    if done != set(gated_parts):
        raise AssertionError(f"{len(set(gated_parts) - done)} gated weight(s) were not found in the sharded state dict")


@functools.cache
def in_process_save_strategy_class() -> type:
    """megatron-core's torch_dist save, synchronous and in this process (see the module docstring).

    The translation to torch's sharded tensors is megatron's own (`_replace_state_dict_keys_with_sharded_keys`,
    `mcore_to_pyt_state_dict`, `MCoreSavePlanner`, as in `TorchDistSaveShardedStrategy.async_save` of
    megatron-core 0.16.1), so the files are the ones megatron writes and reads. The class is made on first use
    so that importing this module does not import megatron-core.
    """
    from megatron.core.dist_checkpointing.strategies.base import SaveShardedStrategy

    class InProcessTorchDistSave(SaveShardedStrategy):
        def __init__(self) -> None:
            super().__init__("torch_dist", 1)

        def can_handle_sharded_objects(self) -> bool:
            return True

        def save(self, sharded_state_dict, checkpoint_dir) -> None:
            import torch.distributed.checkpoint as dcp
            from megatron.core.dist_checkpointing.strategies.torch import (
                MCoreSavePlanner,
                _replace_state_dict_keys_with_sharded_keys,
                mcore_to_pyt_state_dict,
            )

            state, _, _ = _replace_state_dict_keys_with_sharded_keys(sharded_state_dict, True)
            # thread_count=1: written by this thread; sync_files: fsync before the folder is renamed into place
            writer = dcp.FileSystemWriter(str(checkpoint_dir), thread_count=1, sync_files=True)
            with _no_zip_crc32():
                dcp.save(mcore_to_pyt_state_dict(state, False), storage_writer=writer,
                         planner=MCoreSavePlanner(flatten_state_dict=False))

    return InProcessTorchDistSave


@contextlib.contextmanager
def _no_zip_crc32():
    """torch.save without the CRC32 of every zip record, for the duration of our save only.

    torch.save (one per tensor inside the DCP files) checksums every record by default; that was 0.8 s CPU
    of a 4.9 s import of a 1.4 GB model here. torch.load does not check the checksum (torch >= 2.6 documents
    `set_crc32_options(False)` output as loadable), so megatron-core and torch DCP read the files as
    before; only a generic unzip tool would flag the records."""
    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        yield
    finally:
        torch.serialization.set_crc32_options(before)


def load_sharded(sharded_state_dict: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """`dist_checkpointing.load` with a damaged checkpoint reported as an AnemoneError naming the folder."""
    import pickle

    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.core import CheckpointingException
    from torch.distributed.checkpoint.api import (
        CheckpointException,  # a BaseException, wrapping the rank's error
    )

    try:
        return dist_checkpointing.load(sharded_state_dict, str(folder))
    except (CheckpointingException, CheckpointException, RuntimeError, OSError, EOFError, ValueError,
            pickle.UnpicklingError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise AnemoneError(f"cannot read the Megatron checkpoint '{folder}' ({type(exc).__name__}: {first}): "
                           "a file is missing, truncated or corrupt; re-import it with `anemone bridge import`"
                           ) from None


def load_megatron(model: torch.nn.Module, folder: str | Path) -> None:
    """Load a dist checkpoint into this rank's model, whatever layout it was saved at (collective)."""
    state = load_sharded(model.sharded_state_dict(), folder)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing:
        raise AnemoneError(f"Megatron checkpoint '{folder}' lacks {len(missing)} parameter(s) of this model: "
                           f"{missing[:12]}; it was written for another architecture or is incomplete")


def read_meta(folder: str | Path) -> dict[str, Any]:
    """The bridge metadata of a Megatron checkpoint folder, with errors naming what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AnemoneError(f"Megatron checkpoint folder '{folder}' does not exist: give the folder written by "
                           "`anemone bridge import`")
    meta_path = folder / META
    if not meta_path.is_file() or not (folder / "metadata.json").is_file():
        raise AnemoneError(f"'{folder}' is not an anemone-bridge Megatron checkpoint (no {META} or metadata.json): "
                           "write one with `anemone bridge import`")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise AnemoneError(f"'{meta_path}' is not valid JSON ({exc}): the checkpoint is corrupt, re-import it") from None
    if meta.get("format") != FORMAT:
        raise AnemoneError(f"'{meta_path}' has format={meta.get('format')!r}, this anemone-bridge reads format "
                           f"{FORMAT}: re-import the checkpoint")
    if not (folder / "hf" / "config.json").is_file():
        raise AnemoneError(f"'{folder}/hf/config.json' is missing: the checkpoint is incomplete, re-import it")
    return meta
