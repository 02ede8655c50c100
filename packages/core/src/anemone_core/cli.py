"""The `anemone` command. Core adds `version`, `models` and `plan`; each installed package adds its group.

A package registers a group through the entry-point group `anemone.commands`:

    [project.entry-points."anemone.commands"]
    bridge = "anemone_bridge.cli:register"

where `register(parser: argparse.ArgumentParser) -> None` adds the group's verbs as subparsers, each with
`set_defaults(func=handler)` and `handler(args) -> int | None`. The first line of `register`'s docstring is
the group's one-line help. Keep the module light: import torch and friends inside the handlers.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from anemone_core.errors import AnemoneError

GROUP = "anemone.commands"
Register = Callable[[argparse.ArgumentParser], None]


def _builtin_groups() -> dict[str, Register]:
    from anemone_core import demo_cli, models_cli, plan_cli

    return {"models": models_cli.register, "plan": plan_cli.register, "demo": demo_cli.register}


def _first_line(obj: Any) -> str:
    return ((obj.__doc__ or "").strip().splitlines() or [""])[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anemone",
        description="Anemone: curate, convert, train, align, evaluate, export and serve LLMs (and ASR models).",
    )
    sub = parser.add_subparsers(dest="group", metavar="<command>")
    p = sub.add_parser("version", help="print each installed Anemone package and its version")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_version)

    groups: dict[str, Register] = _builtin_groups()
    broken: dict[str, str] = {}
    for ep in sorted(md.entry_points(group=GROUP), key=lambda e: e.name):
        if ep.name in groups:
            continue
        try:
            groups[ep.name] = ep.load()
        except Exception as exc:  # a broken plugin must not take the whole command down
            broken[ep.name] = f"{type(exc).__name__}: {exc}"
    for name, register in groups.items():
        gp = sub.add_parser(name, help=_first_line(register), description=_first_line(register))
        gp.set_defaults(func=lambda args, _gp=gp: (_gp.print_help(), 0)[1])
        try:
            register(gp)
        except Exception as exc:  # a plugin that fails while adding its verbs is reported, not fatal
            why = f"{type(exc).__name__}: {exc}"
            for choice in sub._choices_actions:  # show the failure in `anemone --help` too
                if choice.dest == name:
                    choice.help = f"(failed to load: {why})"
            gp.set_defaults(func=lambda args, _why=why, _n=name: _fail(f"command group '{_n}' failed to load: {_why}"))
    for name, why in broken.items():
        gp = sub.add_parser(name, help=f"(failed to load: {why})")
        gp.set_defaults(func=lambda args, _why=why, _n=name: _fail(f"command group '{_n}' failed to load: {_why}"))
    return parser


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def installed_packages() -> dict[str, str]:
    found = {}
    for dist in md.distributions():
        name = dist.metadata["Name"] or ""
        if name.lower().replace("_", "-").startswith("anemone-") and name.lower() != "anemone-workspace":
            found[name.lower().replace("_", "-")] = dist.version
    return dict(sorted(found.items()))


def _cmd_version(args: argparse.Namespace) -> int:
    pkgs = installed_packages()
    if args.json:
        print_json(pkgs)
    else:
        print_table("Anemone packages", ["package", "version"], [[k, v] for k, v in pkgs.items()])
    return 0


def print_json(obj: Any) -> None:
    """Write one JSON document to stdout (the `--json` convention: nothing else goes to stdout)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], min_width: int = 0) -> None:
    """A rich table on stdout; `min_width` keeps wide tables readable when stdout is a pipe (80 columns)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(str(col))
    for row in rows:
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    console = Console()
    if min_width and console.width < min_width:
        console = Console(width=min_width)
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        rc = args.func(args)
    except AnemoneError as exc:
        if os.environ.get("ANEMONE_TRACEBACK"):
            raise
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted")
    except BrokenPipeError:  # `anemone ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
