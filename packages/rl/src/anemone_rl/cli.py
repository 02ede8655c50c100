"""`anemone rl`: the command group of anemone-rl (SFT, DPO, GRPO). Imports stay light; work is in handlers."""

from __future__ import annotations

import argparse

_VERBS = {
    "sft": ("supervised fine-tuning on chat data (a warm-up before GRPO)", "anemone_rl.sft_config:SFTConfig",
            "anemone_rl.sft_trainer:train"),
    "dpo": ("DPO/IPO on preference pairs against a frozen reference", "anemone_rl.dpo_config:DPOConfig",
            "anemone_rl.dpo_trainer:train"),
    "grpo": ("GRPO with verifiable rewards on Ray workers (generator, policy, reference, environment)",
             "anemone_rl.grpo_config:GRPOConfig", "anemone_rl.grpo_trainer:train"),
}


def _load(path: str):
    import importlib

    mod, _, attr = path.partition(":")
    return getattr(importlib.import_module(mod), attr)


def register(parser: argparse.ArgumentParser) -> None:
    """SFT, DPO and GRPO on Ray workers, with torch (CPU) and vLLM (GPU) generation"""
    from anemone_core.config import add_config_args

    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    for verb, (help_, cfg_path, _) in _VERBS.items():
        p = sub.add_parser(verb, help=help_, description=f"{help_}. Runs on a CPU with no arguments.")
        add_config_args(p, _load(cfg_path))
        p.add_argument("--json", action="store_true", help="print the summary as JSON")
        p.set_defaults(func=_run, rl_verb=verb)


def _run(args: argparse.Namespace) -> int:
    from anemone_core.cli import print_json, print_table
    from anemone_core.config import config_from_args

    _, cfg_path, train_path = _VERBS[args.rl_verb]
    cfg = config_from_args(_load(cfg_path), args)  # validated before any model, data or Ray work
    if args.json:
        cfg.run.progress = False
    summary = _load(train_path)(cfg)
    if args.json:
        print_json(summary)
        return 0
    rows = [[k, v] for k, v in _flatten(summary).items()]
    print_table(f"anemone rl {args.rl_verb}: done", ["", "value"], rows)
    return 0


def _flatten(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out
