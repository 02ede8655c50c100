"""Tokenize rows on first use: a run of a few steps over a large file tokenizes only what it trains on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class LazyMap(Generic[T]):
    """`fn(rows[i])` computed on first access and cached; None marks a row to skip (e.g. too long)."""

    def __init__(self, rows: list[dict[str, Any]], fn: Callable[[dict[str, Any]], T | None]) -> None:
        self.rows, self.fn = rows, fn
        self.cache: dict[int, T | None] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> T | None:
        if i not in self.cache:
            self.cache[i] = self.fn(self.rows[i])
        return self.cache[i]

    def take(self, indices: list[int]) -> tuple[list[T], int]:
        """The items at `indices` without the skipped ones, and how many were skipped."""
        items = [self[i] for i in indices]
        kept = [x for x in items if x is not None]
        return kept, len(items) - len(kept)

    def all(self) -> list[T]:
        return self.take(list(range(len(self))))[0]
