"""In-process training state for SFT and DPO: model + AdamW + schedule, saved and restored for exact resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from anemone_rl.config import OptimConfig


class LocalState:
    def __init__(self, model: Any, tokenizer: Any, optim: OptimConfig, total_steps: int) -> None:
        from anemone_automodel.optim import build_optimizer, build_scheduler

        self.model, self.tokenizer = model, tokenizer
        self.max_grad_norm = optim.max_grad_norm
        self.optimizer = build_optimizer(model, lr=optim.lr, weight_decay=optim.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, optim.warmup_steps, total_steps, optim.min_lr_ratio)

    def step(self) -> float:
        """Clip, step the optimizer and the schedule; returns the pre-clip gradient norm."""
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save_hf(self, folder: Path) -> None:
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)

    def save(self, folder: Path) -> None:
        self.save_hf(folder / "model")
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                   folder / "optimizer.pt")

    def load_optimizer(self, folder: Path) -> None:
        state = torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
