"""`anemone automodel`: the command group of anemone-automodel."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

_EXAMPLES = """
examples:
  anemone automodel {verb}                               # runs on the embedded defaults (CPU is fine)
  anemone automodel {verb} -c recipe.yaml train.steps=100
  anemone automodel {verb} --nproc-per-node 2 parallel.tp=2 lora.enabled=false     # torchrun, gloo on CPU
  torchrun --nproc-per-node 8 -m anemone_automodel.run {verb} -c recipe.yaml        # multi-GPU
"""


def register(parser: argparse.ArgumentParser) -> None:
    """PyTorch-native trainer for Hugging Face causal LMs: pretrain, SFT, LoRA, with FSDP2 and tensor parallel"""
    from anemone_automodel.config import FinetuneConfig, PretrainConfig
    from anemone_core.config import add_config_args

    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    for verb, cls, help_ in (
        ("finetune", FinetuneConfig, "SFT or LoRA of a Hugging Face model on chat / prompt-completion data"),
        ("pretrain", PretrainConfig, "train a model from scratch on raw text (JSONL or Megatron .bin/.idx)"),
    ):
        p = sub.add_parser(verb, help=help_, description=cls.__doc__)
        add_config_args(p, cls)
        p.epilog = _EXAMPLES.format(verb=verb) + "\n" + (p.epilog or "")
        p.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
        p.add_argument("--overwrite", action="store_true", help="replace an existing output.dir")
        p.add_argument("--nproc-per-node", type=int, default=None, metavar="N",
                       help="launch N processes with torchrun (gloo on CPU, NCCL on GPU)")
        p.set_defaults(func=_cmd_train, config_cls=cls)


def _cmd_train(args: argparse.Namespace) -> int:
    from anemone_core.config import config_from_args
    from anemone_core.errors import AnemoneError

    if args.overwrite:
        args.overrides = [*args.overrides, "output.overwrite=true"]
    cfg = config_from_args(args.config_cls, args)  # fail on a bad config before launching anything
    if args.nproc_per_node and args.nproc_per_node > 1 and "RANK" not in os.environ:
        if args.nproc_per_node < 1:
            raise AnemoneError(f"--nproc-per-node = {args.nproc_per_node}: use an integer >= 1")
        return _launch(args)
    from anemone_automodel.trainer import train
    from anemone_core.cli import print_json, print_table

    summary = train(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if args.json:
        print_json(summary)
    else:
        rows = [[k, summary[k]] for k in ("run_dir", "steps", "examples", "first_loss", "final_loss", "tokens_per_s",
                                          "wall_s")]
        rows += [[f"output: {k}", v] for k, v in summary["outputs"].items()]
        print_table(f"anemone automodel {args.verb}", ["field", "value"], rows)
    return 0


def _launch(args: argparse.Namespace) -> int:
    """Re-run this command under torchrun on one node (`python -m torch.distributed.run`)."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc_per_node}",
            "-m", "anemone_automodel.run", args.verb]
    if args.config:
        argv += ["-c", args.config]
    argv += list(args.overrides)
    if args.json:
        argv.append("--json")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.call(argv, env=env)
