"""`anemone plan`: every valid parallel layout for a model on a cluster, with per-GPU memory, before you submit.

CPU, no arguments (the embedded model on one 8 x 80 GB node):
    anemone plan
A 70B model on 4 nodes of 8 H100-80GB:
    anemone plan --preset llama3-70b --gpus 32 --gpus-per-node 8 --gpu-memory-gb 80 --json
"""

from __future__ import annotations

import argparse

from anemone_core.cli import print_json, print_table


def register(parser: argparse.ArgumentParser) -> None:
    """plan TP/PP/CP/EP/DP layouts and per-GPU memory for a model on a cluster"""
    from anemone_core.plan import PRESETS

    parser.add_argument("--model", help="an HF model folder or config.json (default: the embedded model)")
    parser.add_argument("--preset", help=f"a public architecture: {', '.join(PRESETS)}")
    parser.add_argument("--gpus", type=int, default=8, help="total GPUs (default 8)")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node; TP stays inside one (default 8)")
    parser.add_argument("--gpu-memory-gb", type=float, default=80.0, help="memory per GPU in GiB (default 80)")
    parser.add_argument("--seq-len", type=int, default=4096, help="sequence length (default 4096)")
    parser.add_argument("--micro-batch", type=int, default=1, help="micro-batch size per GPU (default 1)")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp8", "fp32"])
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    parser.add_argument("--zero", type=int, default=1, choices=[0, 1, 2, 3],
                        help="0 replicate; 1 shard optimizer states over DP (default, Megatron's distributed "
                             "optimizer); 2 also gradients; 3 also weights (FSDP)")
    parser.add_argument("--reserve-gb", type=float, default=2.0, help="per-GPU reserve for CUDA context and buffers")
    for dim in ("tp", "pp", "cp", "ep", "dp"):
        parser.add_argument(f"--{dim}", type=int, help=f"fix {dim} (default: enumerate)")
    parser.add_argument("--all", action="store_true", help="show every layout, not just the first 15")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anemone_core.plan import Cluster, load_shape, plan, plan_report

    shape = load_shape(args.model, args.preset)
    cluster = Cluster(args.gpus, args.gpus_per_node, args.gpu_memory_gb, args.seq_len, args.micro_batch,
                      args.precision, args.optimizer, args.zero, args.reserve_gb)
    layouts = plan(shape, cluster, tp=args.tp, pp=args.pp, cp=args.cp, ep=args.ep, dp=args.dp)
    report = plan_report(shape, cluster, layouts)
    if args.json:
        print_json(report)
        return 0
    shown = layouts if args.all else layouts[:15]
    rows = [[("*" if i == 0 and lay.fits != "no" else ""), lay.tp, lay.pp, lay.cp, lay.ep, lay.dp,
             f"{lay.params_per_gpu / 1e9:.2f}B", f"{lay.weights_gb:.1f}", f"{lay.grads_gb:.1f}",
             f"{lay.optimizer_gb:.1f}", f"{lay.activations_gb:.1f}", f"{lay.activations_recompute_gb:.1f}",
             f"{lay.total_gb:.1f}", f"{lay.total_recompute_gb:.1f}", lay.fits] for i, lay in enumerate(shown)]
    title = (f"{shape.name} ({shape.total_params() / 1e9:.2f}B params) on {cluster.gpus} x {cluster.gpu_memory_gb:g} GiB, "
             f"seq {cluster.seq_len}, micro-batch {cluster.micro_batch}, {cluster.precision}, {cluster.optimizer}, "
             f"zero {cluster.zero}; memory in GiB per GPU, rc = full activation recompute")
    print_table(title, ["", "tp", "pp", "cp", "ep", "dp", "params", "weights", "grads", "optim", "act", "act rc",
                        "total", "total rc", "fits"], rows, min_width=120)
    more = len(layouts) - len(shown)
    print(f"{report['fitting']} of {len(layouts)} layouts fit" + (f"; {more} more with --all" if more else "")
          + ". * marks the recommended one (fits, most data-parallel).")
    return 0
