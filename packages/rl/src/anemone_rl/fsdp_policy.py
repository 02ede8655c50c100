"""One member of a policy worker group trained with FSDP2 (`grpo.policy_workers` > 1): join the group's gloo
process group, shard the model with automodel's `apply_fsdp`, clip by the global gradient norm, reduce metrics,
and gather full weights / optimizer state on rank 0 for refit and checkpoints.

Every method that gathers is a collective: every rank of the group calls it, in the same order (the driver
calls each worker method on all ranks at once). Rank 0 also keeps an unsharded copy of the model (`host`):
the weights it gathers after each update land there, for generation in colocated mode and for saving.
CPU only (gloo); the ranks must share one machine (master address 127.0.0.1) and one filesystem.
"""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import torch

from anemone_rl.config import OptimConfig
from anemone_rl.local_state import LocalState


def init_group(rank: int, world_size: int, master_port: int, master_addr: str = "127.0.0.1",
               timeout_s: float = 600.0) -> Any:
    """Join the gloo process group (blocks until every rank has joined) and return its 1-D ("dp") mesh."""
    import torch.distributed as dist

    from anemone_core.parallel import ParallelDims, build_device_mesh

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"tcp://{master_addr}:{master_port}", rank=rank,
                                world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s))
    return build_device_mesh(ParallelDims(dp=world_size).resolve(world_size), "cpu")["dp"]


def all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """Sum (or max) floats over the process group, in fp64 (token counts stay exact)."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()


def unique_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The state dict without tied duplicates (lm_head.weight when it is the embedding): the names of
    `named_parameters()` and `named_buffers()`, which is what a generator's `load_weights` copies into."""
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    sd = model.state_dict() if sd is None else sd
    return {k: v.detach().cpu() for k, v in sd.items() if k in names}


class ShardedState(LocalState):
    """`LocalState` over an FSDP2-sharded model: same optimizer and schedule, global-norm clipping, full
    (unsharded) weights and optimizer state written by rank 0."""

    def __init__(self, model: Any, tokenizer: Any, optim: OptimConfig, total_steps: int, mesh: Any) -> None:
        import torch.distributed as dist

        from anemone_automodel.parallelize import apply_fsdp

        self.rank = dist.get_rank()
        self.host = None
        if self.rank == 0:  # unsharded copy for generation and saving, refreshed by `sync_host`
            self.host = copy.deepcopy(model).eval().requires_grad_(False)
        apply_fsdp(model, mesh)
        super().__init__(model, tokenizer, optim, total_steps)

    def step(self) -> float:
        from anemone_automodel.parallelize import clip_grad_norm_

        norm = clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Collective: the full weights on rank 0 (CPU, tied duplicates dropped), None elsewhere."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return unique_state_dict(self.host, sd) if self.host is not None else None

    @torch.no_grad()
    def sync_host(self) -> None:
        """Collective: copy the current weights into rank 0's unsharded copy."""
        sd = self.full_state_dict()
        if self.host is not None:
            params = dict(self.host.named_parameters()) | dict(self.host.named_buffers())
            for name, tensor in sd.items():
                params[name].copy_(tensor)

    def save_hf(self, folder: Path) -> None:
        self.sync_host()
        if self.host is not None:
            self.host.save_pretrained(folder, safe_serialization=True)
            self.tokenizer.save_pretrained(folder)

    def save(self, folder: Path) -> None:
        """Collective: model/ (HF folder) and optimizer.pt (full optimizer state keyed by parameter name)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        self.save_hf(folder / "model")
        osd = get_optimizer_state_dict(self.model, self.optimizer,
                                       options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.rank == 0:
            torch.save({"optimizer": osd, "scheduler": self.scheduler.state_dict()}, folder / "optimizer.pt")

    def load_optimizer(self, folder: Path) -> None:
        """Every rank reads the full optimizer state and keeps its shard."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        state = torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu")
        set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"],
                                 options=StateDictOptions(full_state_dict=True))
        self.scheduler.load_state_dict(state["scheduler"])
