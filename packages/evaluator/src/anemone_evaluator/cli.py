"""`anemone evaluator`: the command group of anemone-evaluator."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    """benchmarks against a local model or an OpenAI-compatible endpoint, with honest statistics"""
    parser.add_subparsers(dest="verb", metavar="<verb>")
