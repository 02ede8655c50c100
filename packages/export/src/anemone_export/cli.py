"""`anemone export`: the command group of anemone-export."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    """export to ONNX, GGUF and serving folders; an OpenAI-compatible server; Ray Serve replicas"""
    parser.add_subparsers(dest="verb", metavar="<verb>")
