"""`anemone speech`: the command group of anemone-speech."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    """speech recognition on PyTorch Lightning: Conformer-CTC, manifests, tokenizers, WER, transcribe"""
    parser.add_subparsers(dest="verb", metavar="<verb>")
