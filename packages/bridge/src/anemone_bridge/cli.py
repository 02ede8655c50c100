"""`anemone bridge`: the command group of anemone-bridge.

    anemone bridge list                                   # supported architectures
    anemone bridge verify --json                          # embedded SmolLM2, TP=1, on the CPU
    anemone bridge verify --model ./qwen3_folder --tp 2   # 2 ranks over gloo, launched for you
    anemone bridge import --tp 2 --out ckpt_tp2           # HF -> Megatron dist checkpoint
    anemone bridge export --megatron ckpt_tp2 --out hf    # Megatron (any layout) -> HF folder
    anemone bridge roundtrip --tp 2                       # import + export + tensor-by-tensor comparison

On GPUs the same commands launch NCCL ranks (one per GPU: tp*pp*ep of them).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _layout_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1)")
    p.add_argument("--pp", type=int, default=1, help="pipeline-parallel size (default 1)")
    p.add_argument("--ep", type=int, default=1, help="expert-parallel size, MoE models only (default 1)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="Hugging Face model folder (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--allow-missing", action="append", default=[], metavar="GLOB",
                   help="accept unmapped Megatron parameters / unused HF tensors matching GLOB (repeatable)")


def register(parser: argparse.ArgumentParser) -> None:
    """Hugging Face <-> Megatron-Core checkpoint conversion, any TP/PP/EP layout, verified on CPU"""
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")

    p = sub.add_parser("list", help="list the supported architectures")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("import", help="HF folder -> Megatron-Core dist checkpoint at a TP/PP/EP layout")
    _model_arg(p)
    p.add_argument("--out", default=None, help="output folder (default ./<model>_megatron_tp<T>_pp<P>_ep<E>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _layout_args(p)
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("export", help="Megatron-Core dist checkpoint (any layout) -> HF folder")
    p.add_argument("--megatron", default=None,
                   help="checkpoint folder from `import` (default: the default `import` output folder)")
    p.add_argument("--out", default=None, help="output HF folder (default ./<model>_hf)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--max-shard-mb", type=int, default=None, help="safetensors file size in MiB (default 2048; one-process exports hold no shard in memory)")
    _layout_args(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("roundtrip", help="import at a layout, export in one process, compare every tensor")
    _model_arg(p)
    p.add_argument("--out", default=None, help="keep the exported HF folder here (default: a temporary folder)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    _layout_args(p)
    p.set_defaults(func=_cmd_roundtrip)

    p = sub.add_parser("verify", help="HF vs Megatron logits on the same tokens, then the export round trip")
    _model_arg(p)
    p.add_argument("--seq-len", type=int, default=32, help="tokens per sequence (2 sequences; default 32)")
    p.add_argument("--per-tensor", action="store_true", help="print the round trip difference of every tensor")
    _layout_args(p)
    p.set_defaults(func=_cmd_verify)


def _name(model: str | None) -> str:
    from anemone_core.models import DEFAULT_MODEL

    return DEFAULT_MODEL if model in (None, "", "default") else Path(str(model)).name


def _default_megatron_out(model: str | None, tp: int, pp: int, ep: int) -> str:
    return f"{_name(model)}_megatron_tp{tp}_pp{pp}_ep{ep}"


def _cmd_list(args: argparse.Namespace) -> int:
    from anemone_bridge.architectures import list_supported_models
    from anemone_core.cli import print_json, print_table

    rows = list_supported_models()
    if args.json:
        print_json(rows)
    else:
        print_table("anemone-bridge architectures", ["name", "HF class", "qkv bias", "qk norm", "MoE (EP)"],
                    [[r["name"], ", ".join(r["hf_architectures"]), r["qkv_bias"], r["qk_norm"], r["moe"]] for r in rows])
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from anemone_bridge.convert import import_ckpt

    out = args.out or _default_megatron_out(args.model, args.tp, args.pp, args.ep)
    result = import_ckpt(args.model, out, args.tp, args.pp, args.ep, overwrite=args.overwrite,
                         allow_missing=args.allow_missing, quiet=args.json)
    return _show(args, result, "import", ["architecture", "tp", "pp", "ep", "padded_vocab_size", "seconds", "out"])


def _cmd_export(args: argparse.Namespace) -> int:
    from anemone_bridge.convert import export_ckpt
    from anemone_core.errors import AnemoneError

    megatron = args.megatron or _default_megatron_out(None, 1, 1, 1)
    if args.megatron is None and not Path(megatron).is_dir():
        raise AnemoneError(f"--megatron not given and the default checkpoint folder ./{megatron} does not exist: "
                           "run `anemone bridge import` first, or pass --megatron PATH")
    if args.max_shard_mb is not None and args.max_shard_mb < 1:
        raise AnemoneError(f"--max-shard-mb {args.max_shard_mb} is invalid: use a positive size in MiB")
    out = args.out or f"{Path(megatron).name.split('_megatron')[0]}_hf"
    shard = args.max_shard_mb * 1024**2 if args.max_shard_mb else None
    result = export_ckpt(megatron, out, args.tp, args.pp, args.ep, overwrite=args.overwrite, max_shard_bytes=shard,
                         quiet=args.json)
    return _show(args, result, "export", ["architecture", "saved_layout", "load_layout", "seconds", "out"])


def _cmd_roundtrip(args: argparse.Namespace) -> int:
    from anemone_bridge.convert import roundtrip

    result = roundtrip(args.model, args.tp, args.pp, args.ep, out=args.out, overwrite=args.overwrite, quiet=args.json)
    _show(args, result, "round trip", ["model", "tp", "pp", "ep", "tensors", "max_abs_diff", "missing", "extra",
                                       "config_equal", "exact", "import_seconds", "export_seconds"])
    return 0 if result["exact"] else 1


def _cmd_verify(args: argparse.Namespace) -> int:
    from anemone_bridge.convert import verify
    from anemone_core.cli import print_table

    result = verify(args.model, args.tp, args.pp, args.ep, seq_len=args.seq_len, allow_missing=args.allow_missing,
                    quiet=args.json)
    rt = result["roundtrip"]
    if not args.json:
        print_table("verify: Megatron vs transformers logits", ["metric", "value"],
                    [[k, result[k]] for k in ("model", "architecture", "tp", "pp", "ep", "tokens", "argmax_agreement",
                                              "cosine_min", "cosine_mean", "max_abs_diff", "seconds")])
        print_table("verify: export round trip", ["metric", "value"],
                    [[k, rt[k]] for k in ("tensors", "exported", "max_abs_diff", "exact", "missing", "extra")])
        if args.per_tensor:
            print_table("round trip per tensor", ["tensor", "max |diff|"], [[k, v] for k, v in rt["per_tensor"].items()])
        print("OK" if result["ok"] else "FAILED: argmax 1.0, cosine >= 0.9999 and an exact round trip are required")
    else:
        _show(args, result, "", [])
    return 0 if result["ok"] else 1


def _show(args: argparse.Namespace, result: dict[str, Any], title: str, keys: list[str]) -> int:
    from anemone_core.cli import print_json, print_table

    if args.json:
        print_json(result)
    else:
        print_table(title, ["field", "value"], [[k, result.get(k)] for k in keys])
    return 0
