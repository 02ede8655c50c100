"""Decode latency per token on the embedded SmolLM2-135M-Instruct, CPU, batch 1, fp32: ONNX Runtime (our exported
KV-cache graph) vs torch eager (the same step function, and transformers' `generate` as the peer), side by side.

    uv run python benchmarks/export_onnx_decode.py [--threads 1] [--tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def decode_ms(step, layout, prompt: list[int], n: int) -> list[float]:
    """Prefill `prompt`, then n greedy steps through the cache; returns per-step milliseconds."""
    from anemone_export.kv_model import positions_from_mask

    ids = torch.tensor([prompt])
    mask = torch.ones_like(ids)
    logits, *cache = step(ids, mask, positions_from_mask(mask, ids.shape[1]), *layout.empty(1))
    times = []
    for _ in range(n):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        mask = torch.cat([mask, torch.ones(1, 1, dtype=torch.long)], 1)
        t = time.perf_counter()
        logits, *cache = step(nxt, mask, positions_from_mask(mask, 1), *cache)
        times.append((time.perf_counter() - t) * 1000)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from anemone_export.onnx_export import OnnxStep, export_onnx
    from anemone_export.server.engine import torch_step
    from anemone_export.sources import load_source

    source = load_source(None)
    prompt = source.tokenizer("The quick brown fox jumps over the lazy dog. Once upon a time,")["input_ids"]
    out = Path(tempfile.mkdtemp()) / "onnx"
    export_onnx(source, out)
    ort = OnnxStep(out / "model.onnx", threads=args.threads)
    tstep, layout = torch_step(source.model)

    def ort_step(*a, **k):
        return ort(*a)

    rows = {"onnxruntime (exported graph)": [], "torch eager (same step fn)": [], "transformers generate": []}
    with torch.no_grad():
        for _ in range(args.repeats):  # interleaved, so load changes hit all three alike
            rows["onnxruntime (exported graph)"] += decode_ms(ort_step, ort.layout, prompt, args.tokens)
            rows["torch eager (same step fn)"] += decode_ms(tstep, layout, prompt, args.tokens)
            ids = torch.tensor([prompt])
            t = time.perf_counter()
            gen = source.model.generate(ids, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False)
            total = (time.perf_counter() - t) * 1000
            assert gen.shape[1] == ids.shape[1] + args.tokens
            rows["transformers generate"] += [total / args.tokens] * args.tokens  # includes prefill
    base = statistics.median(rows["onnxruntime (exported graph)"])
    print(f"decode latency, SmolLM2-135M fp32, batch 1, CPU, {args.threads} thread(s), {args.tokens} tokens x "
          f"{args.repeats} repeats, prompt {len(prompt)} tokens")
    print(f"{'engine':32s} {'median ms/token':>16s} {'p90 ms/token':>13s} {'vs onnxruntime':>15s}")
    for name, ts in rows.items():
        med, p90 = statistics.median(ts), sorted(ts)[int(0.9 * len(ts))]
        print(f"{name:32s} {med:16.1f} {p90:13.1f} {med / base:14.2f}x")


if __name__ == "__main__":
    main()
