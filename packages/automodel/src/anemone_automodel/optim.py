"""AdamW and a linear-warmup + cosine-decay schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def build_optimizer(params: Iterable[torch.nn.Parameter] | torch.nn.Module, lr: float = 2e-4,
                    weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.95),
                    eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases and norm weights (1-D) get no weight decay."""
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    trainable = [p for p in params if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if _fusable(trainable):
        # One fused kernel per tensor instead of ~7 elementwise passes: ~0.5 CPU-s less per step for 134M
        # parameters on this CPU (it is also transformers.Trainer's default, "adamw_torch_fused").
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
    # Sharded parameters: the for-loop kernel works on DTensor shards of every layout.
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=False)


def _fusable(params: list[torch.nn.Parameter]) -> bool:
    from torch.distributed.tensor import DTensor

    return bool(params) and all(
        not isinstance(p, DTensor) and p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params
    )


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Multiplier of the peak learning rate at `step` (0-based): linear warmup, then cosine to min_lr_ratio."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    min_lr_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR with `warmup_cosine`; its state_dict holds only the step count, so it checkpoints cleanly."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup_steps, total_steps, min_lr_ratio)
    )
