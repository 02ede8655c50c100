"""anemone-evaluator's endpoint target vs lm-evaluation-harness's `local-completions`, on one real local server.

The server is anemone-export's OpenAI-compatible server (`anemone export serve`, torch backend, dynamic batching,
1 thread) over the embedded SmolLM2-135M-Instruct, started as its own process on 127.0.0.1. Both clients send
the same task with the same concurrency, alternately, `--repeats` times (best time kept). Besides wall time the
table gives CPU seconds (client process + server process, from /proc) per sample: what each client's traffic
cost the machine, which other jobs distort less than wall time. Our client also puts `--batch-size` prompts in
one /completions request (lm-eval's default sends one); the server decodes what is in flight together.

    uv run --package anemone-evaluator --extra lmeval python benchmarks/evaluator_endpoint_vs_lmeval.py [--limit 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(threads: int, max_batch: int) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:  # a free port: others on this machine may hold the default 8000
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = os.path.join(os.path.dirname(sys.executable), "anemone")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([exe, "export", "serve", "--json", "--port", str(port), "--threads", str(threads),
                             "--max-batch-size", str(max_batch)], stdout=subprocess.PIPE, env=env, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        proc.kill()
        raise SystemExit("anemone export serve did not start")
    return proc, json.loads(line)["url"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per request (ours)")
    ap.add_argument("--server-threads", type=int, default=1)
    ap.add_argument("--server-max-batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tasks", default="arith_mc,arith_gen")
    args = ap.parse_args()

    import tempfile
    from pathlib import Path

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from anemone_core.models import default_model_dir
    from anemone_evaluator.endpoint_target import EndpointTarget
    from anemone_evaluator.eval_config import EvalConfig
    from anemone_evaluator.lmeval_ref import _lmeval_task_dir
    from anemone_evaluator.runner import evaluate
    from anemone_evaluator.tasks import resolve_tasks

    model_dir = default_model_dir()
    proc, url = start_server(args.server_threads, args.server_max_batch)
    rows = []
    try:
        for name in args.tasks.split(","):
            task = resolve_tasks([name])[0]
            n = len(task.docs[: args.limit])
            cfg = EvalConfig(endpoint=url, tasks=[name], limit=args.limit, bootstrap=0, cache=False,
                             endpoint_opts={"concurrency": args.concurrency, "batch_size": args.batch_size})
            best = {"ours": (float("inf"), float("inf")), "lm-eval": (float("inf"), float("inf"))}
            for _ in range(args.repeats):  # alternate, keep the best: the machine is shared and noisy
                target = EndpointTarget(url, concurrency=args.concurrency, batch_size=args.batch_size)
                t0, c0, s0 = time.perf_counter(), time.process_time(), cpu_seconds(proc.pid)
                ours, records = evaluate(cfg, target=target, progress=False)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0 + cpu_seconds(proc.pid) - s0
                best["ours"] = (min(best["ours"][0], wall), min(best["ours"][1], cpu))
                with tempfile.TemporaryDirectory() as tmp:
                    _lmeval_task_dir([task], args.limit, Path(tmp))
                    tm = TaskManager(include_path=tmp, include_defaults=False)
                    model_args = (f"model=smollm2-135m-instruct,base_url={url}/completions,"
                                  f"num_concurrent={args.concurrency},tokenizer_backend=huggingface,"
                                  f"tokenizer={model_dir},max_retries=3")
                    t0, c0, s0 = time.perf_counter(), time.process_time(), cpu_seconds(proc.pid)
                    ref = simple_evaluate(model="local-completions", model_args=model_args, tasks=[name],
                                          task_manager=tm, log_samples=True, num_fewshot=0, random_seed=0,
                                          numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
                    wall, cpu = time.perf_counter() - t0, time.process_time() - c0 + cpu_seconds(proc.pid) - s0
                    best["lm-eval"] = (min(best["lm-eval"][0], wall), min(best["lm-eval"][1], cpu))
            samples = sorted(ref["samples"][name], key=lambda s: s["doc_id"])
            metric = next(iter(ours["tasks"][name]["metrics"]))
            v_ours = ours["tasks"][name]["metrics"][metric]["value"]
            v_ref = ref["results"][name][f"{metric},{samples[0]['filter']}"]
            if task.output_type == "multiple_choice":
                agree = [r["scores"]["acc"] == s["acc"] for r, s in zip(records, samples, strict=True)]
            else:
                agree = [r["response"] == s["resps"][0][0] for r, s in zip(records, samples, strict=True)]
            (t_ours, c_ours), (t_ref, c_ref) = best["ours"], best["lm-eval"]
            rows.append([name, n, f"{metric} {v_ours:.4f} / {v_ref:.4f}", f"{sum(agree)}/{n}",
                         f"{n / t_ours:.2f} / {n / t_ref:.2f}", f"{t_ref / t_ours:.2f}x",
                         f"{n / c_ours:.2f} / {n / c_ref:.2f}", f"{c_ref / c_ours:.2f}x",
                         f"{os.getloadavg()[0]:.1f}"])
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    cols = ["task", "docs", "value ours / lm-eval", "agreement", "samples/s ours / lm-eval", "ratio",
            "samples/CPU-s ours / lm-eval", "CPU ratio", "load"]
    print(f"endpoint: anemone-evaluator (batch {args.batch_size}) vs lm-eval 0.4.13 local-completions, "
          f"anemone export serve (torch, {args.server_threads} thread(s), max batch {args.server_max_batch}) over "
          f"SmolLM2-135M fp32, concurrency {args.concurrency}, best of {args.repeats}")
    widths = [max(len(str(r[i])) for r in [cols, *rows]) for i in range(len(cols))]
    for r in [cols, *rows]:
        print(" | ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
