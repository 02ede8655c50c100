"""Data order as a pure function of (seed, step), so a resumed run sees exactly the batches it would have."""

from __future__ import annotations

import random


def step_indices(n_rows: int, step: int, per_step: int, seed: int) -> list[int]:
    """Row indices of `step`: epochs of seeded permutations laid end to end, `per_step` rows per step."""
    idx = []
    cache: dict[int, list[int]] = {}
    for k in range(step * per_step, (step + 1) * per_step):
        epoch, pos = divmod(k, n_rows)
        if epoch not in cache:
            order = list(range(n_rows))
            random.Random(seed * 1_000_003 + epoch).shuffle(order)
            cache[epoch] = order
        idx.append(cache[epoch][pos])
    return idx
