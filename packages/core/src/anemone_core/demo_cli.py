"""`anemone demo`: curate -> fine-tune -> align -> evaluate -> convert -> export and serve, on a CPU, no arguments.

    anemone demo                          # every step, artifacts in runs/demo/
    anemone demo --steps evaluate,export  # some steps, reusing an earlier run's models in the same folder
"""

from __future__ import annotations

import argparse

from anemone_core.cli import print_json, print_table


def register(parser: argparse.ArgumentParser) -> None:
    """a model's whole life on a CPU: curate, fine-tune, align, evaluate, convert, export and serve"""
    parser.add_argument("--run-dir", default="runs/demo", help="where every artifact goes (default runs/demo)")
    parser.add_argument("--steps", help="comma-separated subset of: curate,sft,grpo,evaluate,convert,export")
    parser.add_argument("--quick", action="store_true", help="fewer training steps and samples (for smoke tests)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: a GPU when torch sees one (fine-tuning, GRPO, evaluation), else the CPU")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anemone_core.demo import run_demo

    steps = [s.strip() for s in args.steps.split(",") if s.strip()] if args.steps else None
    summary = run_demo(args.run_dir, steps, quick=args.quick, device=args.device)
    if args.json:
        print_json(summary)
        return 0
    print_table(f"anemone demo: {summary['run_dir']} ({summary['device']}, {summary['total_seconds']:.0f} s)",
                ["step", "what it produced", "key figure", "time (s)"],
                [[r["step"], r["produced"], r["figure"], r["seconds"]] for r in summary["steps"]], min_width=120)
    return 0
