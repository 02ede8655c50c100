"""Process-group and megatron-core parallel-state set-up for one conversion or verification job.

Inside torchrun (RANK/WORLD_SIZE set) we join its group through `anemone_core.parallel.init_distributed`;
a plain single process gets a one-rank gloo group on an in-memory store, because megatron-core's parallel
state needs torch.distributed even at TP=PP=1.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from anemone_bridge.cpu_patches import apply_cpu_patches, import_megatron_eagerly


@dataclass(frozen=True)
class Layout:
    """Where this rank sits: sizes and ranks along TP, PP and EP."""

    tp: int
    pp: int
    ep: int
    tp_rank: int
    pp_rank: int
    ep_rank: int
    dp_rank: int
    rank: int
    world_size: int

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp - 1


def current_layout() -> Layout:
    from megatron.core import parallel_state as ps

    return Layout(
        tp=ps.get_tensor_model_parallel_world_size(), pp=ps.get_pipeline_model_parallel_world_size(),
        ep=ps.get_expert_model_parallel_world_size(), tp_rank=ps.get_tensor_model_parallel_rank(),
        pp_rank=ps.get_pipeline_model_parallel_rank(), ep_rank=ps.get_expert_model_parallel_rank(),
        dp_rank=ps.get_data_parallel_rank(), rank=dist.get_rank(), world_size=dist.get_world_size(),
    )


_frozen = False


def _freeze_imported_objects() -> None:
    """`gc.freeze()` once per process, after torch and megatron-core are imported.

    Importing them creates millions of objects tracked by the cyclic garbage collector (module globals,
    classes, sympy's tables, ...) that live as long as the process. Every full collection traverses them
    again, and so does the one at interpreter exit: ~0.8 s CPU per process here (`python -c "import torch;
    <megatron-core imported>"` exits in 3.4 s CPU, 2.7 s with `gc.freeze()` at the end, 2.6 s with
    `os._exit`). Frozen objects are never traversed again; the cost is that an object alive now that later
    becomes cyclic garbage is not reclaimed (nothing of ours: our tensors are allocated after this)."""
    global _frozen
    if not _frozen:
        import gc

        gc.freeze()
        _frozen = True


@contextlib.contextmanager
def parallel_session(tp: int = 1, pp: int = 1, ep: int = 1, timeout_s: float = 600.0) -> Iterator[Layout]:
    """Join (or create) the process group, initialize megatron-core's parallel state, tear both down after."""
    import_megatron_eagerly()
    from megatron.core import parallel_state as ps

    from anemone_core.parallel import init_distributed

    _freeze_imported_objects()

    created = False
    if not dist.is_initialized():
        info = init_distributed(timeout_s=timeout_s)
        if info.world_size == 1 and not dist.is_initialized():
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1,
                                    timeout=datetime.timedelta(seconds=timeout_s))
        created = True
    apply_cpu_patches()
    ps.destroy_model_parallel()
    ps.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
                                 expert_model_parallel_size=ep)
    try:
        yield current_layout()
    finally:
        ps.destroy_model_parallel()
        if created:
            dist.destroy_process_group()


def gather_object(obj, dst: int = 0) -> list | None:
    """`dist.gather_object` that also works in a one-rank world."""
    if dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size() if dist.get_rank() == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def all_gather_object(obj) -> list:
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def comm_device() -> torch.device:
    """Where tensors must be for the process group's collectives: CUDA under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def send_to(tensor: torch.Tensor, src: int, dst: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
    """Move one tensor from rank `src` to rank `dst` (point to point); returns it on `dst` (on the CPU),
    None elsewhere."""
    rank = dist.get_rank()
    if src == dst:
        return tensor.cpu() if rank == dst else None
    if rank == src:
        dist.send(tensor.contiguous().to(comm_device()), dst=dst)
        return None
    if rank == dst:
        buf = torch.empty(shape, dtype=dtype, device=comm_device())
        dist.recv(buf, src=src)
        return buf.cpu()
    return None
