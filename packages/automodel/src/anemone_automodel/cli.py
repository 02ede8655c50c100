"""`anemone automodel`: the command group of anemone-automodel."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    """pyTorch-native trainer for Hugging Face causal LMs: pretrain, SFT, LoRA, with FSDP2 and tensor parallel"""
    parser.add_subparsers(dest="verb", metavar="<verb>")
