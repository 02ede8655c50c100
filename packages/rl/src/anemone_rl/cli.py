"""`anemone rl`: the command group of anemone-rl."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    """sFT, DPO and GRPO on Ray workers, with torch (CPU) and vLLM (GPU) generation"""
    parser.add_subparsers(dest="verb", metavar="<verb>")
