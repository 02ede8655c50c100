"""Generation tokens/s: anemone-rl's torch backend vs transformers `generate`, same model, prompts and batch.

    uv run python benchmarks/rl_generation.py [--batches 1 8 32] [--new-tokens 64] [--threads 1] [--compile]

Both sample (temperature 1, top_p 1) exactly `--new-tokens` tokens per prompt (EOS ignored) from the embedded
SmolLM2-135M-Instruct in fp32, every row a different chat prompt (`--samples-per-prompt G`: each prompt G
times, as GRPO samples them); each batch size runs ours (eager, and with `--compile` the torch.compile'd decode
step) and the peer back to back, alternating, and the best of `--repeats` is kept for each (the machine is
shared). Each figure is given per wall second and per CPU second of this process.

It also times, in the same run, the **matmul floor** of each batch size: only the weight matmuls of the same
generation (per layer the fused QKV, output, fused gate/up and down projections; the LM head), for the
prefill of the padded prompts and each decode step, and nothing else (no attention, norms, sampling or Python
around them; the faster of two weight layouts). Any fp32 decoder of this model must do at least these matmuls per token, so `floor tok/s` bounds every
implementation on this machine and `transformers tok/s / floor tok/s` bounds the speed-up over transformers
that any fp32 decoder can reach here.
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


def question(i: int) -> str:
    """The i-th distinct prompt text (every row of a batch differs unless --samples-per-prompt repeats them)."""
    return f"{QUESTIONS[i % len(QUESTIONS)]} (question {i + 1})"


def timed(fn) -> tuple[float, float]:
    """(wall s, CPU s of this process) of fn()."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def decode_matmuls(model) -> list[torch.Tensor]:
    """The weight matrices one decode step multiplies by, fused as the fastest decoder fuses them."""
    mats = []
    for layer in model.model.layers:
        att, mlp = layer.self_attn, layer.mlp
        mats += [torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]).detach(),
                 att.o_proj.weight.detach(),
                 torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach(), mlp.down_proj.weight.detach()]
    return [*mats, model.lm_head.weight.detach()]


def matmul_floor(mats: list[torch.Tensor], b: int, prompt_len: int, steps: int, transposed: bool):
    """A function that runs the weight matmuls of one generation and nothing else: the prefill (b x prompt_len
    rows through every layer matrix, the LM head on the last row of each prompt), then `steps` decode steps (b
    rows through every matrix). `F.linear` on the HF (out, in) layout, or (`transposed`) `x @ w` on (in, out) copies, the faster
    layout at small batches on this CPU."""
    *layers, head = mats

    def fan_in(m: torch.Tensor) -> int:
        return m.shape[0] if transposed else m.shape[1]

    def run(x: dict[int, torch.Tensor], matrices: list[torch.Tensor]) -> None:
        for m in matrices:
            x[fan_in(m)] @ m if transposed else torch.nn.functional.linear(x[fan_in(m)], m)

    prompts = {fan_in(m): torch.randn(b * prompt_len, fan_in(m)) for m in mats}  # made here, not timed
    rows = {fan_in(m): torch.randn(b, fan_in(m)) for m in mats}

    @torch.no_grad()
    def generation() -> None:
        run(prompts, layers)
        run(rows, [head])
        for _ in range(steps):
            run(rows, mats)

    return generation


def measure_batch(model, tok, sides: dict[str, TorchGenerator], b: int, args,
                  mats: list[torch.Tensor]) -> dict[str, tuple[float, float]]:
    """Best (wall s, CPU s) over `args.repeats` of each side, of transformers generate and of the matmul floor,
    alternating."""
    mats_t = [m.t().contiguous() for m in mats]
    g = args.samples_per_prompt
    texts = [tok.apply_chat_template([{"role": "user", "content": question(i // g)}],
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
    P = enc["input_ids"].shape[1]
    for _ in range(args.repeats):
        floors = [("floor", matmul_floor(mats, b, P, args.new_tokens - 1, False)),
                  ("floor", matmul_floor(mats_t, b, P, args.new_tokens - 1, True))]  # the faster layout counts
        for name, fn in [*((n, lambda g=g: run(g)) for n, g in sides.items()), ("transformers", hf), *floors]:
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
    ap.add_argument("--samples-per-prompt", type=int, default=1,
                    help="G > 1: each prompt appears G times in a batch (GRPO's groups; our decoder prefills "
                         "each distinct prompt once); 1: every row is a different prompt")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder = default_model_dir()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    sides = {"ours": TorchGenerator(model, tokenizer=tok)}
    if args.compile:
        sides["ours compiled"] = TorchGenerator(model, tokenizer=tok, compile=True)
    mats = decode_matmuls(model)
    rows, floors = [], []
    for b in args.batches:
        best = measure_batch(model, tok, sides, b, args, mats)
        n = b * args.new_tokens
        hf_w, hf_c = best["transformers"]
        fl_w, fl_c = best["floor"]
        for name in sides:
            w, c = best[name]
            rows.append([b, name, round(n / w, 1), round(n / c, 1), round(n / hf_w, 1), round(n / hf_c, 1),
                         round(hf_w / w, 2), round(hf_c / c, 2)])
            print(f"batch {b}: {name} {n / w:.1f} tok/s ({n / c:.1f} per CPU s), transformers {n / hf_w:.1f} "
                  f"({n / hf_c:.1f} per CPU s), matmul floor {n / fl_w:.1f} ({n / fl_c:.1f})", flush=True)
        ours_c = best["ours"][1]
        floors.append([b, round(n / fl_w, 1), round(n / fl_c, 1), round(hf_c / fl_c, 2), round(ours_c / fl_c, 2),
                       round(hf_w / fl_w, 2)])
    print_table(f"generation, SmolLM2-135M fp32, sampling, {args.new_tokens} new tokens, {args.threads} thread(s), "
                f"{args.samples_per_prompt} sample(s) per prompt",
                ["batch", "side", "tok/s", "tok/CPU s", "transformers tok/s", "transformers tok/CPU s",
                 "speed-up wall", "speed-up CPU"], rows)
    print_table("matmul floor (the prefill and decode weight matmuls alone): the most any fp32 decoder can reach here",
                ["batch", "floor tok/s", "floor tok/CPU s", "max speed-up over transformers (CPU)",
                 "ours: CPU s / floor CPU s", "max speed-up over transformers (wall)"], floors)


if __name__ == "__main__":
    main()
