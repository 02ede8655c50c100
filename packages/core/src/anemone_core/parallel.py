"""Parallelism: one `ParallelDims(dp, tp, pp, cp, ep)`, checked against the world size and the model up front;
`init_distributed()` from torchrun's environment (gloo on CPU, NCCL on GPU, always with a timeout); the device
mesh the trainers shard over; rank-zero logging.

Layout convention (Megatron's): world_size == dp * tp * pp * cp. Expert parallelism does not multiply the world
size: the `ep` expert groups are carved out of the dp x cp ranks, so ep must divide dp * cp.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

from anemone_core.errors import AnemoneError


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _choices(values: list[int]) -> str:
    return "{" + ",".join(str(v) for v in values) + "}"


@dataclass(frozen=True)
class ParallelDims:
    """Sizes of each parallel dimension. `dp=None` means "whatever is left of the world size"."""

    dp: int | None = None
    tp: int = 1
    pp: int = 1
    cp: int = 1
    ep: int = 1

    def resolve(self, world_size: int) -> ParallelDims:
        """Fill in dp from `world_size` and check `world_size == dp*tp*pp*cp`; errors name the fix."""
        for name in ("tp", "pp", "cp", "ep"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise AnemoneError(f"{name}={value!r} is invalid: every parallel size is an integer >= 1")
        if world_size < 1:
            raise AnemoneError(f"world size {world_size} is invalid: need at least 1 process/GPU")
        model_parallel = self.tp * self.pp * self.cp
        if self.dp is None:
            if world_size % model_parallel:
                raise AnemoneError(
                    f"tp={self.tp} x pp={self.pp} x cp={self.cp} = {model_parallel} does not divide the world size "
                    f"{world_size}: choose sizes whose product divides {world_size} "
                    f"(divisors: {_choices(divisors(world_size))})"
                )
            dims = ParallelDims(world_size // model_parallel, self.tp, self.pp, self.cp, self.ep)
        else:
            if self.dp < 1:
                raise AnemoneError(f"dp={self.dp} is invalid: use dp >= 1 or leave it out to derive it")
            need = self.dp * model_parallel
            if need != world_size:
                fits = world_size // model_parallel if world_size % model_parallel == 0 else None
                hint = f"dp={fits} fits {world_size}" if fits else "no dp fits these tp/pp/cp"
                raise AnemoneError(
                    f"dp={self.dp} x tp={self.tp} x pp={self.pp} x cp={self.cp} = {need} GPUs, but the world size is "
                    f"{world_size}: use {need} GPUs, or smaller tp/pp/cp, or leave dp out ({hint})"
                )
            dims = self
        if (dims.dp * dims.cp) % dims.ep:  # type: ignore[operator]
            valid = [e for e in divisors(dims.dp * dims.cp)]  # type: ignore[operator]
            raise AnemoneError(
                f"ep={dims.ep} does not divide dp x cp = {dims.dp * dims.cp}: expert-parallel groups are made of "  # type: ignore[operator]
                f"data/context-parallel ranks; choose ep in {_choices(valid)}"
            )
        return dims

    @property
    def world_size(self) -> int:
        if self.dp is None:
            raise AnemoneError("dp is unresolved: call ParallelDims.resolve(world_size) first")
        return self.dp * self.tp * self.pp * self.cp

    def check_model(self, num_attention_heads: int, num_key_value_heads: int | None = None,
                    num_layers: int | None = None, num_experts: int | None = None) -> None:
        """Check the sizes against the model's shape; every problem is listed with its valid choices."""
        problems = []
        kv = num_key_value_heads or num_attention_heads
        if num_attention_heads % self.tp or kv % self.tp:
            valid = [d for d in divisors(num_attention_heads) if kv % d == 0]
            problems.append(
                f"tp={self.tp} does not divide num_attention_heads={num_attention_heads} and "
                f"num_key_value_heads={kv}: choose tp in {_choices(valid)}"
            )
        if num_layers is not None and num_layers % self.pp:
            problems.append(f"pp={self.pp} does not divide num_layers={num_layers}: choose pp in {_choices(divisors(num_layers))}")
        if self.ep > 1 and not num_experts:
            problems.append(f"ep={self.ep} needs a mixture-of-experts model; this model is dense: use ep=1")
        elif num_experts and num_experts % self.ep:
            problems.append(f"ep={self.ep} does not divide num_experts={num_experts}: choose ep in {_choices(divisors(num_experts))}")
        if problems:
            raise AnemoneError("; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        return {"dp": self.dp, "tp": self.tp, "pp": self.pp, "cp": self.cp, "ep": self.ep}


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: str  # "cpu" or "cuda:N"
    backend: str  # "gloo" or "nccl"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistInfo:
    """Rank, world size and local rank as torchrun sets them (a single process when unset)."""
    import torch

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and os.environ.get("ANEMONE_FORCE_CPU") != "1"
    return DistInfo(rank, world, local, f"cuda:{local}" if cuda else "cpu", "nccl" if cuda else "gloo")


def init_distributed(timeout_s: float = 600.0, backend: str | None = None) -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, ...). Idempotent.

    gloo on CPU, NCCL on GPU. A timeout is always set: a crashed rank otherwise leaves the others hanging in
    collectives forever. A single process with no torchrun environment gets no process group.
    """
    import torch
    import torch.distributed as dist

    info = dist_env()
    if backend:
        info = DistInfo(info.rank, info.world_size, info.local_rank, info.device, backend)
    if info.device.startswith("cuda"):
        torch.cuda.set_device(info.local_rank)
    if info.world_size > 1 and not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise AnemoneError(
                f"WORLD_SIZE={info.world_size} but MASTER_ADDR is not set: launch with torchrun "
                "(`torchrun --nproc-per-node N ...`) or set MASTER_ADDR/MASTER_PORT"
            )
        dist.init_process_group(info.backend, rank=info.rank, world_size=info.world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return info


def destroy_distributed() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def build_device_mesh(dims: ParallelDims, device_type: str = "cpu"):
    """A torch DeviceMesh over the non-trivial dims, ordered ("pp", "dp", "cp", "tp") outer to inner, so that
    TP ranks are adjacent (inside one node) and PP is the outermost dimension. Size-1 dims are kept so
    callers can always index `mesh["dp"]`, `mesh["tp"]`."""
    from torch.distributed.device_mesh import init_device_mesh

    names = ("pp", "dp", "cp", "tp")
    shape = tuple(int(getattr(dims, n)) for n in names)  # type: ignore[arg-type]
    return init_device_mesh(device_type, shape, mesh_dim_names=names)


def rank_zero_print(*args: Any, **kwargs: Any) -> None:
    """print() on global rank 0 only."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(*args, **kwargs, flush=True)


def get_logger(name: str):
    """A `logging` logger whose records are dropped on every rank but 0."""
    import logging

    logger = logging.getLogger(name)
    if not any(isinstance(f, _RankZeroFilter) for f in logger.filters):
        logger.addFilter(_RankZeroFilter())
    return logger


class _RankZeroFilter:
    def filter(self, record: Any) -> bool:
        return int(os.environ.get("RANK", "0")) == 0
