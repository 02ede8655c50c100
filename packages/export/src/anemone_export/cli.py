"""`anemone export`: hf | onnx | gguf | serve. Each verb runs with no arguments on the embedded model.

    uv run anemone export onnx                      # embedded model -> ./exports/onnx, validated in ONNX Runtime
    uv run anemone export gguf --type q8_0          # -> ./exports/model-q8_0.gguf, validated by transformers' reader
    uv run anemone export hf --adapter lora/ --dtype bfloat16 --out merged/
    uv run anemone export serve --port 8000         # OpenAI-compatible server on 127.0.0.1
    uv run anemone export serve --replicas 2        # the same app as 2 Ray Serve replicas
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="HF model folder (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--adapter", help="PEFT LoRA adapter folder to merge into the model before export")
    p.add_argument("--megatron", help="Megatron-Core checkpoint to convert through anemone-bridge (extra 'bridge')")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--json", action="store_true", help="print the validation report as JSON")


def _quiet_hf() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _load(args):
    from rich.console import Console

    from anemone_export.sources import load_source

    _quiet_hf()
    with Console(stderr=True).status("loading the source model"):
        return load_source(args.model, args.adapter, args.megatron)


def _finish(args, report, out: Path) -> int:
    from anemone_core.cli import print_json

    if args.json:
        print_json(report.as_dict() | {"output": str(out)})
    else:
        report.print()
        print(f"wrote {out}")
    return 0


def _cmd_onnx(args) -> int:
    from rich.console import Console

    from anemone_export.onnx_export import export_onnx

    source = _load(args)
    with Console(stderr=True).status("exporting to ONNX and validating in ONNX Runtime"):
        report = export_onnx(source, Path(args.out), atol=args.atol, min_agreement=args.min_agreement,
                             opset=args.opset, overwrite=args.overwrite)
    return _finish(args, report, Path(args.out))


def _cmd_gguf(args) -> int:
    from rich.console import Console

    from anemone_export.gguf_export import DEFAULT_THRESHOLDS, export_gguf

    out = Path(args.out or f"exports/model-{args.type}.gguf")
    atol, agree = DEFAULT_THRESHOLDS[args.type]
    source = _load(args)
    with Console(stderr=True).status(f"writing GGUF {args.type} and validating with transformers' GGUF reader"):
        report = export_gguf(source, out, args.type, atol=args.atol if args.atol is not None else atol,
                             min_agreement=args.min_agreement if args.min_agreement is not None else agree,
                             overwrite=args.overwrite)
    return _finish(args, report, out)


def _cmd_hf(args) -> int:
    from rich.console import Console

    from anemone_export.hf_export import export_hf

    source = _load(args)
    with Console(stderr=True).status(f"writing an HF folder in {args.dtype} and validating it"):
        report = export_hf(source, Path(args.out), dtype=args.dtype, max_shard_size=args.max_shard_size,
                           atol=args.atol, min_agreement=args.min_agreement, overwrite=args.overwrite)
    return _finish(args, report, Path(args.out))


def _cmd_serve(args) -> int:
    from anemone_export.server.serve_cli import run_serve

    return run_serve(args)


def register(parser: argparse.ArgumentParser) -> None:
    """export to ONNX, GGUF and HF/vLLM folders; an OpenAI-compatible server; Ray Serve replicas"""
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")

    p = sub.add_parser("onnx", help="ONNX decoder with KV cache, validated in ONNX Runtime")
    _source_args(p)
    p.add_argument("--out", default="exports/onnx", help="output folder (default exports/onnx)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--atol", type=float, default=5e-4, help="max |logit diff| allowed vs torch (default 5e-4)")
    p.add_argument("--min-agreement", type=float, default=0.99, help="min greedy-token agreement (default 0.99)")
    p.set_defaults(func=_cmd_onnx)

    p = sub.add_parser("gguf", help="GGUF file (f32, f16, q8_0, q4_0, q4_1) for llama.cpp, validated by an independent reader")
    _source_args(p)
    p.add_argument("--type", default="f16", choices=["f32", "f16", "q8_0", "q4_0", "q4_1"], help="tensor type (default f16)")
    p.add_argument("--out", help="output file (default exports/model-<type>.gguf)")
    p.add_argument("--atol", type=float, help="max |logit diff| allowed (default per type)")
    p.add_argument("--min-agreement", type=float, help="min greedy-token agreement (default per type)")
    p.set_defaults(func=_cmd_gguf)

    p = sub.add_parser("hf", help="HF/vLLM folder: merge a LoRA adapter, cast dtype, keep tokenizer and chat template")
    _source_args(p)
    p.add_argument("--out", default="exports/hf", help="output folder (default exports/hf)")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"], help="weights dtype (default bfloat16)")
    p.add_argument("--max-shard-size", default="2GB", help="safetensors shard size (default 2GB)")
    p.add_argument("--atol", type=float, help="max |logit diff| allowed (default per dtype)")
    p.add_argument("--min-agreement", type=float, help="min greedy-token agreement (default per dtype)")
    p.set_defaults(func=_cmd_hf)

    from anemone_export.server.serve_cli import add_serve_args  # light: pydantic and the standard library

    p = sub.add_parser("serve", help="OpenAI-compatible server (torch, onnx or vllm backend; --replicas N on Ray Serve)")
    add_serve_args(p)
    p.set_defaults(func=_cmd_serve)
