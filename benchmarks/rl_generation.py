"""Generation tokens/s: anemone-rl's torch backend vs transformers `generate`, same model, prompts and batch.

    uv run python benchmarks/rl_generation.py [--batches 1 8 32] [--new-tokens 64] [--threads 1] [--compile]

Both sample (temperature 1, top_p 1) exactly `--new-tokens` tokens per prompt (EOS ignored) from the embedded
SmolLM2-135M-Instruct in fp32; each batch size runs ours (eager, and with `--compile` the torch.compile'd decode
step) and the peer back to back, alternating, and the best of `--repeats` is kept for each (the machine is
shared). Each figure is given per wall second and per CPU second of this process.

It also measures the memory-read bandwidth of this process (summing a tensor as large as the weights) and the
bound it sets at batch 1: every decode step reads every weight once, so tokens/s <= bandwidth / weight bytes.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from anemone_core.cli import print_table
from anemone_core.models import default_model_dir
from anemone_rl.generation import SamplingParams, TorchGenerator

QUESTIONS = ["What is 17 + 25?", "Name a primary colour.", "What is the capital of France?",
             "Write a haiku about the sea.", "What is 9 times 7?", "Explain gravity in one sentence.",
             "List three fruits.", "What day comes after Monday?"]


def timed(fn) -> tuple[float, float]:
    """(wall s, CPU s of this process) of fn()."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def read_bandwidth(n_bytes: int, repeats: int = 5) -> float:
    """Bytes/s of summing an fp32 tensor of n_bytes (best of `repeats`): the read rate a decode step can get."""
    x = torch.ones(n_bytes // 4)
    best = min(timed(lambda: x.sum())[0] for _ in range(repeats))
    return n_bytes / best


def measure_batch(model, tok, sides: dict[str, TorchGenerator], b: int, args) -> dict[str, tuple[float, float]]:
    """Best (wall s, CPU s) over `args.repeats` of each side and of transformers generate, alternating."""
    texts = [tok.apply_chat_template([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                                     tokenize=False, add_generation_prompt=True) for i in range(b)]
    prompts = [tok(t)["input_ids"] for t in texts]
    params = SamplingParams(max_tokens=args.new_tokens, temperature=1.0, ignore_eos=True, seed=0)
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True)

    def hf():
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                 max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                 pad_token_id=tok.pad_token_id)
        assert out.shape[1] - enc["input_ids"].shape[1] == args.new_tokens

    def run(gen):
        outs = gen.generate(prompts, params)
        assert all(len(o.token_ids) == args.new_tokens for o in outs)

    if "ours compiled" in sides:  # compiling for this batch size is a one-off cost, reported, not timed below
        w, c = timed(lambda: run(sides["ours compiled"]))
        print(f"batch {b}: first compiled call (compiles) {w:.1f} s wall, {c:.1f} s CPU", flush=True)
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeats):
        for name, fn in [*((n, lambda g=g: run(g)) for n, g in sides.items()), ("transformers", hf)]:
            w, c = timed(fn)
            prev = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(prev[0], w), min(prev[1], c))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time TorchGenerator(compile=True)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder = default_model_dir()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    sides = {"ours": TorchGenerator(model, tokenizer=tok)}
    if args.compile:
        sides["ours compiled"] = TorchGenerator(model, tokenizer=tok, compile=True)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())  # tied head counted once
    rows = []
    for b in args.batches:
        best = measure_batch(model, tok, sides, b, args)
        n = b * args.new_tokens
        hf_w, hf_c = best["transformers"]
        for name in sides:
            w, c = best[name]
            rows.append([b, name, round(n / w, 1), round(n / c, 1), round(n / hf_w, 1), round(n / hf_c, 1),
                         round(hf_w / w, 2), round(hf_c / c, 2)])
            print(f"batch {b}: {name} {n / w:.1f} tok/s ({n / c:.1f} per CPU s), transformers {n / hf_w:.1f} "
                  f"({n / hf_c:.1f} per CPU s)", flush=True)
    print_table(f"generation, SmolLM2-135M fp32, sampling, {args.new_tokens} new tokens, {args.threads} thread(s)",
                ["batch", "side", "tok/s", "tok/CPU s", "transformers tok/s", "transformers tok/CPU s",
                 "speed-up wall", "speed-up CPU"], rows)
    bw = read_bandwidth(weight_bytes)
    print(f"weights {weight_bytes / 1e6:.0f} MB; read bandwidth {bw / 1e9:.1f} GB/s ({args.threads} thread(s)) -> "
          f"batch-1 bound {bw / weight_bytes:.1f} tokens/s (every decode step reads every weight once)")


if __name__ == "__main__":
    main()
