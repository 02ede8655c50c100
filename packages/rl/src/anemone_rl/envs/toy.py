"""A dense toy reward for smoke tests and examples: any untrained model gets varied, non-zero rewards."""

from __future__ import annotations

from typing import Any


def digits_reward(sample: dict[str, Any], response: str) -> float:
    """Fraction of the response's non-space characters that are digits (0 for an empty response)."""
    chars = [c for c in response if not c.isspace()]
    return sum(c.isdigit() for c in chars) / len(chars) if chars else 0.0
