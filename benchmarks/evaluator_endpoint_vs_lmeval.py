"""anemone-evaluator's endpoint target vs lm-evaluation-harness's `local-completions`, on one local server.

The server is anemone_evaluator.testing.OpenAIStubServer over the embedded SmolLM2-135M-Instruct (fp32, CPU,
one model call at a time), on 127.0.0.1; both clients send the same task to it with the same concurrency.
The server is the bottleneck by design: this measures what a client adds (and whether it agrees).

    uv run --package anemone-evaluator --extra lmeval python benchmarks/evaluator_endpoint_vs_lmeval.py [--limit 50]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tasks", default="arith_mc,arith_gen")
    args = ap.parse_args()

    import tempfile
    from pathlib import Path

    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from anemone_core.models import default_model_dir
    from anemone_evaluator.endpoint_target import EndpointTarget
    from anemone_evaluator.eval_config import EvalConfig
    from anemone_evaluator.lmeval_ref import _lmeval_task_dir
    from anemone_evaluator.runner import evaluate
    from anemone_evaluator.tasks import resolve_tasks
    from anemone_evaluator.testing import OpenAIStubServer

    torch.set_num_threads(args.threads)
    model_dir = default_model_dir()
    server = OpenAIStubServer(model_dir, model_name="smollm2")
    rows = []
    try:
        for name in args.tasks.split(","):
            task = resolve_tasks([name])[0]
            n = len(task.docs[: args.limit])
            cfg = EvalConfig(endpoint=server.url, tasks=[name], limit=args.limit, bootstrap=0, cache=False,
                             endpoint_opts={"concurrency": args.concurrency})
            target = EndpointTarget(server.url, concurrency=args.concurrency)
            p0 = server.posts
            t0 = time.perf_counter()
            ours, records = evaluate(cfg, target=target, progress=False)
            t_ours, posts_ours = time.perf_counter() - t0, server.posts - p0
            with tempfile.TemporaryDirectory() as tmp:
                _lmeval_task_dir([task], args.limit, Path(tmp))
                tm = TaskManager(include_path=tmp, include_defaults=False)
                model_args = (f"model=smollm2,base_url={server.url}/completions,num_concurrent={args.concurrency},"
                              f"tokenizer_backend=huggingface,tokenizer={model_dir},max_retries=3")
                p0 = server.posts
                t0 = time.perf_counter()
                ref = simple_evaluate(model="local-completions", model_args=model_args, tasks=[name],
                                      task_manager=tm, log_samples=True, num_fewshot=0, random_seed=0,
                                      numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
                t_ref, posts_ref = time.perf_counter() - t0, server.posts - p0
            samples = sorted(ref["samples"][name], key=lambda s: s["doc_id"])
            metric = next(iter(ours["tasks"][name]["metrics"]))
            v_ours = ours["tasks"][name]["metrics"][metric]["value"]
            v_ref = ref["results"][name][f"{metric},{samples[0]['filter']}"]
            if task.output_type == "multiple_choice":
                agree = [r["scores"]["acc"] == s["acc"] for r, s in zip(records, samples, strict=True)]
            else:
                agree = [r["response"] == s["resps"][0][0] for r, s in zip(records, samples, strict=True)]
            rows.append([name, n, f"{metric} {v_ours:.4f} / {v_ref:.4f}", f"{sum(agree) / n:.3f}",
                         f"{posts_ours} / {posts_ref}", f"{n / t_ours:.2f}", f"{n / t_ref:.2f}",
                         f"{t_ref / t_ours:.2f}x"])
    finally:
        server.close()
    cols = ["task", "docs", "value ours / lm-eval", "agreement", "HTTP requests ours / lm-eval", "ours samples/s",
            "lm-eval samples/s", "ratio"]
    print(f"endpoint: anemone-evaluator vs lm-eval 0.4.13 local-completions, stub server over SmolLM2-135M fp32 "
          f"(CPU, {args.threads} thread(s)), concurrency {args.concurrency}")
    widths = [max(len(str(r[i])) for r in [cols, *rows]) for i in range(len(cols))]
    for r in [cols, *rows]:
        print(" | ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
