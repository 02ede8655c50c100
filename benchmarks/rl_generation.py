"""Generation tokens/s: anemone-rl's torch backend vs transformers `generate`, same model, prompts and batch.

    uv run python benchmarks/rl_generation.py [--batches 1 8 32] [--new-tokens 64] [--threads 1]

Both sample (temperature 1, top_p 1) exactly `--new-tokens` tokens per prompt (EOS ignored) from the embedded
SmolLM2-135M-Instruct in fp32; each batch size runs ours and the peer back to back, alternating, and the
best of `--repeats` is kept for each (the machine is shared).
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder = default_model_dir()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ours = TorchGenerator(model, tokenizer=tok)
    rows = []
    for b in args.batches:
        texts = [tok.apply_chat_template([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                                         tokenize=False, add_generation_prompt=True) for i in range(b)]
        prompts = [tok(t)["input_ids"] for t in texts]
        params = SamplingParams(max_tokens=args.new_tokens, temperature=1.0, ignore_eos=True, seed=0)
        tok.padding_side = "left"
        enc = tok(texts, return_tensors="pt", padding=True)
        best_ours = best_hf = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            outs = ours.generate(prompts, params)
            best_ours = min(best_ours, time.perf_counter() - t0)
            assert all(len(o.token_ids) == args.new_tokens for o in outs)
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                     max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                     pad_token_id=tok.pad_token_id)
            best_hf = min(best_hf, time.perf_counter() - t0)
            assert out.shape[1] - enc["input_ids"].shape[1] == args.new_tokens
        n = b * args.new_tokens
        rows.append([b, round(n / best_ours, 1), round(n / best_hf, 1), round(best_hf / best_ours, 2)])
        print(f"batch {b}: ours {n / best_ours:.1f} tok/s, transformers {n / best_hf:.1f} tok/s", flush=True)
    print_table(f"generation, SmolLM2-135M fp32, sampling, {args.new_tokens} new tokens, {args.threads} thread(s)",
                ["batch", "anemone-rl torch tok/s", "transformers generate tok/s", "speed-up"], rows)


if __name__ == "__main__":
    main()
