"""Entry point for torchrun: `torchrun --nproc-per-node 2 -m anemone_automodel.run finetune [args]`.

The same arguments as `anemone automodel finetune|pretrain`; errors print like the `anemone` command's.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from anemone_core.errors import AnemoneError


def main(argv: Sequence[str] | None = None) -> int:
    from anemone_automodel.cli import register

    parser = argparse.ArgumentParser(prog="anemone_automodel.run")
    register(parser)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except AnemoneError as exc:
        if os.environ.get("ANEMONE_TRACEBACK"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
