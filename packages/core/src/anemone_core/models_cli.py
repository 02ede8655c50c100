"""`anemone models list | path | info`: the embedded default model and where it lives."""

from __future__ import annotations

import argparse

from anemone_core.cli import print_json, print_table


def register(parser: argparse.ArgumentParser) -> None:
    """the embedded default model (SmolLM2-135M-Instruct): list, path, info"""
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    p = sub.add_parser("list", help="list the embedded models and whether each is converted")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_list)
    p = sub.add_parser("path", help="print the embedded model's HF folder, converting it once if needed")
    p.set_defaults(func=_path)
    p = sub.add_parser("info", help="architecture, size and files of a model folder (default: the embedded one)")
    p.add_argument("model", nargs="?", help="an HF folder (default: the embedded model)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_info)


def _list(args: argparse.Namespace) -> int:
    from anemone_core.models import DEFAULT_MODEL, _is_complete, embedded_gguf_path, model_dir

    folder = model_dir(DEFAULT_MODEL)
    rows = [{"name": DEFAULT_MODEL, "default": True, "converted": _is_complete(folder), "path": str(folder),
             "source": str(embedded_gguf_path())}]
    if args.json:
        print_json(rows)
    else:
        print_table("Embedded models", ["name", "default", "converted", "path"],
                    [[r["name"], r["default"], r["converted"], r["path"]] for r in rows])
    return 0


def _path(args: argparse.Namespace) -> int:
    from anemone_core.models import default_model_dir

    print(default_model_dir())
    return 0


def _info(args: argparse.Namespace) -> int:
    from anemone_core.models import model_info, resolve_model

    info = model_info(resolve_model(args.model))
    if args.json:
        print_json(info)
    else:
        rows = [["path", info["path"]], ["parameters", info["parameters"]], ["bytes", info["bytes"]]]
        rows += [[k, v] for k, v in info["config"].items()]
        print_table(info["name"], ["field", "value"], rows)
    return 0
