"""`anemone eval`: benchmarks against a local model or an OpenAI-compatible endpoint.

    anemone eval run                                   # embedded model, built-in tasks, CPU
    anemone eval run --model ./ckpt --tasks arith_mc,my_task.yaml --limit 100 --batch-size 32
    anemone eval run --endpoint http://127.0.0.1:8000/v1 --tasks arith_gen --chat-template
    anemone eval ls
    anemone eval compare anemone-eval/before anemone-eval/after --fail-on-regression
"""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    """benchmarks against a local model or an OpenAI-compatible endpoint, with honest statistics"""
    from anemone_core.config import add_config_args
    from anemone_evaluator.eval_config import EvalConfig

    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    p = sub.add_parser("run", help="evaluate a model folder or an endpoint on tasks; write results.json + samples.jsonl",
                       description=__doc__)
    p.add_argument("--model", help="Hugging Face model folder (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--endpoint-model", help="model name to send to the endpoint (default: first of GET /models)")
    p.add_argument("--tasks", help="comma-separated task names or YAML paths (default: all built-in tasks)")
    p.add_argument("--limit", type=int, help="first N documents of each task")
    p.add_argument("--num-fewshot", type=int, help="few-shot examples per question (default: the task's)")
    p.add_argument("--batch-size", type=int, help="local model rows per forward pass")
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--chat-template", action="store_true", help="wrap prompts in the model's chat template")
    p.add_argument("--system-prompt", help="system message (chat) or prompt prefix (plain)")
    p.add_argument("--output", "-o", help="results folder (default: ./anemone-eval/<model>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing results folder")
    p.add_argument("--json", action="store_true", help="print results.json to stdout instead of a table")
    add_config_args(p, EvalConfig)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("ls", help="list the built-in tasks (and those in --task-dir)")
    p.add_argument("--task-dir", action="append", default=[], help="also list the task YAML files in this folder")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("compare", help="paired significance test: did run B regress against run A?")
    p.add_argument("a", help="baseline results folder")
    p.add_argument("b", help="candidate results folder")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 when B regressed (a CI gate)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_compare)


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    """Dedicated flags become config overrides, so -c recipes, `a.b=c` and flags share one validation."""
    import json

    pairs = {"model": args.model, "endpoint": args.endpoint, "endpoint_opts.model": args.endpoint_model,
             "limit": args.limit, "num_fewshot": args.num_fewshot, "local.batch_size": args.batch_size,
             "local.device": args.device, "system_prompt": args.system_prompt, "output": args.output}
    out = [f"{k}={json.dumps(v)}" for k, v in pairs.items() if v is not None]
    if args.tasks:
        out.append(f"tasks={json.dumps([t.strip() for t in args.tasks.split(',') if t.strip()])}")
    if args.chat_template:
        out.append("chat_template=true")
    if args.overwrite:
        out.append("overwrite=true")
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from anemone_core.cli import print_json
    from anemone_core.config import load_config
    from anemone_core.errors import AnemoneError
    from anemone_evaluator.eval_config import EvalConfig
    from anemone_evaluator.runner import default_output, evaluate, write_results

    cfg = load_config(EvalConfig, args.config, list(args.overrides or []) + _flag_overrides(args))
    name = (cfg.endpoint_opts.model or "endpoint") if cfg.endpoint else Path(cfg.model or "smollm2-135m-instruct").name
    out = Path(cfg.output) if cfg.output else default_output(name)
    if out.exists() and not cfg.overwrite:  # fail before the model loads, not after the run
        raise AnemoneError(f"output folder {out} already exists: choose another --output or pass --overwrite")
    log = out.parent / f".{out.name}.requests.jsonl" if cfg.log_requests else None
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)
    results, records = evaluate(cfg, progress=not args.json, log_path=log)
    write_results(out, results, records, overwrite=cfg.overwrite, request_log=log)
    if log:
        log.unlink(missing_ok=True)
    results["output"] = str(out)
    if args.json:
        print_json(results)
    else:
        print_results(results)
        print(f"wrote {out / 'results.json'} and {out / 'samples.jsonl'}")
    return 0


def print_results(results: dict) -> None:
    from anemone_core.cli import print_table

    rows = []
    for task, info in results["tasks"].items():
        for metric, m in info["metrics"].items():
            arrow = "↑" if m["higher_is_better"] else "↓"
            rows.append([task, f"{metric} {arrow}", f"{m['value']:.4f}", f"± {m['stderr']:.4f}",
                         f"[{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}]", m["n"], info["samples_per_s"]])
    model = results["model"].get("path") or results["model"].get("url")
    chat = any(i["chat_template"] for i in results["tasks"].values())
    print_table(f"{model} (chat template {'on' if chat else 'off'})",
                ["task", "metric", "value", "stderr", "95% CI", "n", "samples/s"], rows)


def cmd_ls(args: argparse.Namespace) -> int:
    from anemone_core.cli import print_json, print_table
    from anemone_evaluator.tasks import builtin_tasks, load_task_yaml, resolve_tasks

    names = list(builtin_tasks())
    for d in args.task_dir:
        names += [load_task_yaml(f).name for f in sorted(__import__("pathlib").Path(d).glob("*.yaml"))]
    tasks = resolve_tasks(names, args.task_dir)
    rows = [{"task": t.name, "output_type": t.output_type, "metrics": t.metrics, "documents": len(t.docs),
             "label": t.config.metadata.get("label", ""), "source": t.source} for t in tasks]
    if args.json:
        print_json(rows)
    else:
        print_table("evaluation tasks", ["task", "type", "metrics", "docs", "what it is"],
                    [[r["task"], r["output_type"], ", ".join(r["metrics"]), r["documents"], r["label"]] for r in rows])
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from anemone_core.cli import print_json, print_table
    from anemone_evaluator.compare import compare_runs

    report = compare_runs(args.a, args.b, args.alpha)
    if args.json:
        print_json(report)
    else:
        rows = [[r["task"], r["metric"], f"{r['a']:.4f}", f"{r['b']:.4f}", f"{r['delta_paired']:+.4f}", r["n_paired"],
                 r["test"], f"{r['p_value']:.3g}",
                 "REGRESSED" if r["regressed"] else ("improved" if r["improved"] else "no significant change")]
                for r in report["rows"]]
        print_table(f"A={args.a}  B={args.b}  alpha={args.alpha}",
                    ["task", "metric", "A", "B", "delta", "n", "test", "p", "verdict"], rows)
        for w in report["warnings"]:
            print(f"warning: {w}")
        lost = [f"{r['task']}/{r['metric']} ({r['delta_paired']:+.4f}, p={r['p_value']:.3g})"
                for r in report["rows"] if r["regressed"]]
        print(f"verdict: B REGRESSED on {', '.join(lost)}" if lost else "verdict: no significant regression")
    return 1 if (args.fail_on_regression and report["regressed"]) else 0
