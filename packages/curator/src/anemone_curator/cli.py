"""`anemone curator`: run pipelines, deduplicate, show statistics.

anemone curator run                               # the default pipeline on the embedded sample corpus
anemone curator run pipeline.yaml output=out executor.workers=8
anemone curator run pipeline.yaml executor.kind=ray executor.address=auto   # the same on a Ray cluster
anemone curator dedup data/ --output deduped --mode both
anemone curator stats curated/                    # a run's per-stage table, or counts of any JSONL/Parquet
"""

from __future__ import annotations

import argparse
from typing import Any


def register(parser: argparse.ArgumentParser) -> None:
    """text data pipelines: filters, language id, exact and fuzzy dedup on CPU, PII, tokenize to Megatron"""
    from anemone_core.config import add_config_args
    from anemone_curator.pipeline_config import PipelineConfig

    sub = parser.add_subparsers(dest="verb", metavar="<verb>")

    p = sub.add_parser("run", help="run a pipeline (YAML or the default) and print the per-stage counts")
    add_config_args(p, PipelineConfig)
    p.description = "Run a pipeline. A first positional argument ending in .yaml is the recipe (same as -c)."
    p.add_argument("--ray", action="store_true", help="run on Ray (same as executor.kind=ray)")
    p.add_argument("--address", help="Ray cluster address, e.g. auto or ray://head:10001 (implies --ray)")
    p.add_argument("--overwrite", action="store_true", help="delete an existing output folder first")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("dedup", help="exact and/or fuzzy (MinHash LSH) deduplication of JSONL/Parquet files")
    p.add_argument("input", nargs="*", help="files, folders or globs (default: the embedded sample corpus)")
    p.add_argument("--output", default="deduped", help="output folder (default: deduped)")
    p.add_argument("--mode", choices=["exact", "fuzzy", "both"], default="both")
    p.add_argument("--bands", type=int, default=20, help="LSH bands (default 20)")
    p.add_argument("--rows", type=int, default=6, help="rows per band (default 6)")
    p.add_argument("--ngram", type=int, default=5, help="word n-gram size (default 5)")
    p.add_argument(
        "--verify",
        type=float,
        default=0.7,
        help="min signature agreement to join a candidate pair (default 0.7); -1 joins every candidate",
    )
    p.add_argument("--workers", type=int, default=0, help="parallel shards (0 = every core)")
    p.add_argument("--overwrite", action="store_true", help="delete an existing output folder first")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(func=cmd_dedup)

    p = sub.add_parser("stats", help="per-stage table of a finished run, or counts of JSONL/Parquet files")
    p.add_argument(
        "path", nargs="*", help="a run's output folder, or data files/folders (default: sample corpus)"
    )
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("sample", help="write the embedded sample corpus to a folder")
    p.add_argument("--output", default="sample-corpus", help="output folder (default: sample-corpus)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    p.add_argument("--json", action="store_true", help="print the written files as JSON")
    p.set_defaults(func=cmd_sample)


def _split_recipe(args: argparse.Namespace) -> None:
    """`run pipeline.yaml k=v`: a first positional without '=' that names a YAML file is the recipe."""
    from anemone_core.errors import AnemoneError

    if args.overrides and "=" not in args.overrides[0]:
        first = args.overrides.pop(0)
        if not first.endswith((".yaml", ".yml")):
            raise AnemoneError(
                f"argument '{first}' is neither a key=value override nor a .yaml recipe: "
                "write e.g. `anemone curator run pipeline.yaml output=out`"
            )
        if args.config:
            raise AnemoneError(f"two recipes given ('{first}' and -c {args.config}): pass one")
        args.config = first


def cmd_run(args: argparse.Namespace) -> int:
    from anemone_core.config import config_from_args
    from anemone_curator.pipeline import run_pipeline
    from anemone_curator.pipeline_config import PipelineConfig

    _split_recipe(args)
    if args.ray or args.address:
        args.overrides.append("executor.kind=ray")
    if args.address:
        args.overrides.append(f"executor.address={args.address}")
    cfg = config_from_args(PipelineConfig, args)
    result = run_pipeline(cfg, overwrite=args.overwrite, progress=not (args.no_progress or args.json))
    _report(result.to_dict(), args.json)
    return 0


def cmd_dedup(args: argparse.Namespace) -> int:
    from anemone_curator.pipeline import run_pipeline
    from anemone_curator.pipeline_config import ExactDedupConfig, FuzzyDedupConfig, PipelineConfig

    stages: list[Any] = []
    if args.mode in ("exact", "both"):
        stages.append(ExactDedupConfig())
    if args.mode in ("fuzzy", "both"):
        from anemone_core.config import validate

        stages.append(
            validate(
                FuzzyDedupConfig,
                {
                    "bands": args.bands,
                    "rows": args.rows,
                    "ngram": args.ngram,
                    "verify": None if args.verify < 0 else args.verify,
                },
            )
        )
    cfg = PipelineConfig(
        input=args.input, output=args.output, stages=stages, executor={"workers": args.workers}
    )  # type: ignore[arg-type]
    result = run_pipeline(cfg, overwrite=args.overwrite, progress=not (args.no_progress or args.json))
    _report(result.to_dict(), args.json)
    return 0


def _report(summary: dict[str, Any], as_json: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from anemone_core.cli import print_json

    if as_json:
        print_json(summary)
        return
    table = Table(title="curator: documents per stage")
    for col in ["stage", "in", "out", "dropped", "reasons (top 4)", "counters"]:
        table.add_column(col, overflow="fold")
    for st in summary["stages"]:
        top = sorted(st["dropped"].items(), key=lambda kv: -kv[1])[:4]
        extra = [(k, v) for k, v in st["counters"].items() if not k.startswith("c4_lines")][:6]
        table.add_row(
            st["name"],
            str(st["docs_in"]),
            str(st["docs_out"]),
            str(sum(st["dropped"].values())),
            "\n".join(f"{k}={v}" for k, v in top),
            "\n".join(f"{k}={v}" for k, v in extra),
        )
    console = Console(width=max(120, Console().width))
    console.print(table)
    t = summary["totals"]
    line = f"input {t['input']} = kept {t['kept']} + rejected {t['rejected']} + duplicates {t['duplicates']}"
    if t.get("unaccounted"):
        line += f"  (UNACCOUNTED {t['unaccounted']})"
    console.print(line)
    for name, path in summary.get("files", {}).items():
        console.print(f"{name}: {path}")
    console.print(f"output: {summary['output']}")


def cmd_stats(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from anemone_core.cli import print_json, print_table
    from anemone_curator.corpus import sample_corpus
    from anemone_curator.formats import read_documents
    from anemone_curator.stage import Rejected

    paths = args.path or [str(sample_corpus())]
    if len(paths) == 1 and (Path(paths[0]) / "stats.json").is_file():
        summary = json.loads((Path(paths[0]) / "stats.json").read_text(encoding="utf-8"))
        summary["output"] = paths[0]
        _report(summary, args.json)
        return 0
    from anemone_curator.formats import expand_inputs

    rows = []
    for f in expand_inputs(paths):
        n = bad = chars = words = 0
        for item in read_documents(f):
            if isinstance(item, Rejected):
                bad += 1
                continue
            n += 1
            chars += len(item["text"])
            words += len(item["text"].split())
        rows.append(
            {
                "file": str(f) if args.json else f.name,
                "documents": n,
                "invalid_records": bad,
                "words": words,
                "chars": chars,
                "mean_words": round(words / max(1, n), 1),
            }
        )
    if args.json:
        print_json(rows)
    else:
        print_table(
            f"curator: dataset statistics ({', '.join(paths)})",
            list(rows[0].keys()),
            [list(r.values()) for r in rows],
        )
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from pathlib import Path

    from anemone_core.cli import print_json
    from anemone_curator.corpus import build_sample_corpus

    out = build_sample_corpus(Path(args.output), overwrite=args.overwrite)
    files = sorted(str(p) for p in out.iterdir())
    if args.json:
        print_json({"output": str(out), "files": files})
    else:
        print("\n".join(files))
    return 0
