"""A deterministic, resumable, data-parallel batch plan.

Every epoch draws a permutation from `seed + epoch`; with packing, the permuted examples are then packed
into rows of `seq_len`. A *unit* is an example (or a packed row). Each optimizer step consumes
`micro_batch_size * grad_accum * dp_size` consecutive units: data-parallel rank r takes its contiguous slice
and splits it into `grad_accum` micro-batches. So the same global batch is seen whatever the layout
(4 x 1 accumulation == 1 x 4; 2 ranks == 1 rank with 2x accumulation), and the position (epoch, cursor) is
all a checkpoint needs to resume exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from anemone_automodel.data.collate import pack_collate, pack_groups, pad_collate
from anemone_core.errors import AnemoneError


class BatchPlan:
    def __init__(self, examples: Sequence[dict], *, micro_batch_size: int, grad_accum: int = 1, dp_size: int = 1,
                 dp_rank: int = 0, seed: int = 0, shuffle: bool = True, pack: bool = False, seq_len: int = 256,
                 pad_id: int = 0) -> None:
        self.examples = examples
        self.mb, self.accum, self.dp_size, self.dp_rank = micro_batch_size, grad_accum, dp_size, dp_rank
        self.seed, self.shuffle, self.pack, self.seq_len, self.pad_id = seed, shuffle, pack, seq_len, pad_id
        self.epoch, self.cursor = 0, 0
        self._units: list[list[int]] | None = None
        need = self.units_per_step
        if len(self._epoch_units()) < need:
            raise AnemoneError(
                f"the data gives {len(self._epoch_units())} {'packed rows' if pack else 'examples'} but one step needs "
                f"train.micro_batch_size x train.grad_accum x dp = {micro_batch_size} x {grad_accum} x {dp_size} = {need}:"
                " lower micro_batch_size or grad_accum, or add data"
            )

    @property
    def units_per_step(self) -> int:
        return self.mb * self.accum * self.dp_size

    def _epoch_units(self) -> list[list[int]]:
        if self._units is None:
            n = len(self.examples)
            if self.shuffle:
                order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
            else:
                order = list(range(n))
            if self.pack:
                groups = pack_groups([len(self.examples[i]["input_ids"]) for i in order], self.seq_len)
                self._units = [[order[j] for j in g] for g in groups]
            else:
                self._units = [[i] for i in order]
        return self._units

    def next_step(self) -> list[dict[str, torch.Tensor]]:
        """This rank's `grad_accum` micro-batches for the next optimizer step."""
        if self.cursor + self.units_per_step > len(self._epoch_units()):
            self.epoch, self.cursor, self._units = self.epoch + 1, 0, None  # drop the incomplete tail
        units = self._epoch_units()[self.cursor : self.cursor + self.units_per_step]
        self.cursor += self.units_per_step
        mine = units[self.dp_rank * self.mb * self.accum : (self.dp_rank + 1) * self.mb * self.accum]
        return [self._collate(mine[i * self.mb : (i + 1) * self.mb]) for i in range(self.accum)]

    def _collate(self, units: list[list[int]]) -> dict[str, torch.Tensor]:
        """A micro-batch plus `num_tokens` (real, unpadded tokens; for throughput, not a model input)."""
        if self.pack:
            batch = pack_collate([[self.examples[i] for i in u] for u in units], self.seq_len, self.pad_id)
        else:
            batch = pad_collate([self.examples[u[0]] for u in units], self.pad_id)
        n = sum(min(len(self.examples[i]["input_ids"]), self.seq_len) for u in units for i in u)
        batch["num_tokens"] = torch.tensor(n)
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor, "units_per_step": self.units_per_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor, self._units = int(state["epoch"]), int(state["cursor"]), None
