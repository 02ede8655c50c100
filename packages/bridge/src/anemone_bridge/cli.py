"""`anemone bridge`: the command group of anemone-bridge."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    """Hugging Face <-> Megatron-Core checkpoint conversion, any TP/PP/EP layout, verified on CPU"""
    parser.add_subparsers(dest="verb", metavar="<verb>")
