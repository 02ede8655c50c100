"""`anemone curator`: the command group of anemone-curator."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    """text data pipelines: filters, language id, exact and fuzzy dedup on CPU, PII, tokenize to Megatron"""
    parser.add_subparsers(dest="verb", metavar="<verb>")
