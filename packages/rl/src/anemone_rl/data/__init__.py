"""Prompt datasets, preference pairs and the shipped arithmetic task."""

from anemone_rl.data.arithmetic import arithmetic_rows, load_arithmetic
from anemone_rl.data.loaders import load_rows, normalize_preference, prompt_messages

__all__ = ["arithmetic_rows", "load_arithmetic", "load_rows", "normalize_preference", "prompt_messages"]
