"""Generation tokens/s: anemone-rl's torch backend vs transformers `generate`, same model, prompts and batch.

    uv run python benchmarks/rl_generation.py [--batches 1 8 32] [--new-tokens 64] [--threads 1] [--compile]
                                              [--no-bf16] [--samples-per-prompt G]

Both sample (temperature 1, top_p 1) exactly `--new-tokens` tokens per prompt (EOS ignored) from the embedded
SmolLM2-135M-Instruct, every row a different chat prompt (`--samples-per-prompt G`: each prompt G times, as GRPO
samples them). Sides, run back to back and alternating for each batch size, the best of `--repeats` kept for
each (the machine is shared); each figure is given per wall second and per CPU second of this process:

- `ours`: `TorchGenerator` in fp32 (with `--compile` also the torch.compile'd decode step);
- `ours bf16`: `TorchGenerator(matmul_dtype="bfloat16")`, weight matmuls in bf16 (oneDNN, AMX on this CPU),
  the rest fp32; skipped on a CPU without oneDNN bf16 or with `--no-bf16`;
- `transformers`: `generate` on the fp32 model (the issue's baseline), and `transformers bf16`: `generate` on
  a bf16 copy of the model (how transformers runs in bf16: every op in bf16), the same-precision peer of
  `ours bf16`.

`ours bf16`'s logprobs differ from an fp32 trainer's: the run reports mean and max |Δ logp| per token between
the generator and the fp32 model's forward over the generated sequences (the GRPO mismatch metric).

It also times, in the same run, the **matmul floor** of each batch size: only the weight matmuls of the same
generation (per layer the fused QKV, output, fused gate/up and down projections; the LM head), for the prefill
of the padded prompts and each decode step, and nothing else (no attention, norms, sampling or Python around
them). In fp32 it takes the fastest of three ways to multiply: `F.linear` on the HF (out, in) layout, `x @ w`
on (in, out) copies, and MKL's packed GEMM (`torch.ops.mkl._mkl_linear`, weights packed for each row count
beforehand, not timed); in bf16, oneDNN's packed bf16 GEMM. Any decoder doing this model's arithmetic in that
precision must do at least these matmuls per token, so `floor tok/s` bounds every implementation on this
machine and `floor / transformers` bounds the speed-up over transformers that any decoder can reach here.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from anemone_core.cli import print_table
from anemone_core.models import default_model_dir
from anemone_rl.generation import SamplingParams, TorchGenerator

BF16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()

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
    """The weight matrices, HF (out, in) layout, one decode step multiplies by, fused as our decoder fuses them."""
    mats = []
    for layer in model.model.layers:
        att, mlp = layer.self_attn, layer.mlp
        mats += [torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]).detach(),
                 att.o_proj.weight.detach(),
                 torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach(), mlp.down_proj.weight.detach()]
    return [*mats, model.lm_head.weight.detach()]


def floor_multipliers(mats: list[torch.Tensor], b: int, prompt_len: int) -> dict[str, tuple]:
    """Ways to multiply rows by every matrix: name -> (multiply(x, i) for matrix i, whether a bf16 way).

    Prepared here, untimed: transposed copies, MKL packs for the prefill's and the decode's row counts (an MKL
    pack serves one row count), oneDNN bf16 packs (any row count)."""
    mkl = torch.ops.mkl
    ways: dict[str, tuple] = {
        "fp32 F.linear": (lambda x, i: torch.nn.functional.linear(x, mats[i]), False)}
    trans = [m.t().contiguous() for m in mats]
    ways["fp32 x @ w"] = (lambda x, i: x @ trans[i], False)
    if torch.backends.mkl.is_available():
        packs = {n: [mkl._mkl_reorder_linear_weight(m, n) for m in mats] for n in (b * prompt_len, b)}
        ways["fp32 MKL packed"] = (lambda x, i: mkl._mkl_linear(x, packs[x.shape[0]][i], mats[i], None,
                                                                   x.shape[0]), False)
    if BF16:
        bpacks = [torch.ops.mkldnn._reorder_linear_weight(m.bfloat16()) for m in mats]
        ways["bf16 oneDNN packed"] = (lambda x, i: torch.ops.mkldnn._linear_pointwise(
            x, bpacks[i], None, "none", [], ""), True)
    return ways


def matmul_floor(mats: list[torch.Tensor], multiply, bf16: bool, b: int, prompt_len: int, steps: int):
    """A function that runs the weight matmuls of one generation and nothing else: the prefill (b x prompt_len
    rows through every layer matrix, the LM head on the last row of each prompt), then `steps` decode steps (b
    rows through every matrix)."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    fan_in = [m.shape[1] for m in mats]
    prompts = {k: torch.randn(b * prompt_len, k).to(dtype) for k in set(fan_in)}  # made here, not timed
    rows = {k: torch.randn(b, k).to(dtype) for k in set(fan_in)}
    head = len(mats) - 1

    @torch.no_grad()
    def generation() -> None:
        for i in range(head):
            multiply(prompts[fan_in[i]], i)
        multiply(rows[fan_in[head]], head)
        for _ in range(steps):
            for i in range(len(mats)):
                multiply(rows[fan_in[i]], i)

    return generation


def logprob_mismatch(model, prompts: list[list[int]], outs) -> tuple[float, float]:
    """Mean and max |generator logp - fp32 forward logp| per generated token (temperature 1)."""
    gaps = []
    with torch.no_grad():
        for p, o in zip(prompts, outs, strict=True):
            full = torch.tensor([p + o.token_ids])
            logits = model(full).logits[0, len(p) - 1 : -1].float()
            lp = torch.log_softmax(logits, -1).gather(-1, full[0, len(p):, None])[:, 0]
            gaps.append((lp - torch.tensor(o.logprobs)).abs())
    gap = torch.cat(gaps)
    return float(gap.mean()), float(gap.max())


def measure_batch(models: dict[str, torch.nn.Module], tok, sides: dict[str, TorchGenerator], b: int, args,
                  mats: list[torch.Tensor]) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    """Best (wall s, CPU s) over `args.repeats` of each side, of transformers generate (fp32 and bf16) and of each
    matmul floor, alternating; and each generator's logprob mismatch against the fp32 model."""
    g = args.samples_per_prompt
    texts = [tok.apply_chat_template([{"role": "user", "content": question(i // g)}],
                                     tokenize=False, add_generation_prompt=True) for i in range(b)]
    prompts = [tok(t)["input_ids"] for t in texts]
    params = SamplingParams(max_tokens=args.new_tokens, temperature=1.0, ignore_eos=True, seed=0)
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True)
    P = enc["input_ids"].shape[1]

    def hf(model):
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                 max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                 pad_token_id=tok.pad_token_id)
        assert out.shape[1] - enc["input_ids"].shape[1] == args.new_tokens

    outs: dict[str, list] = {}

    def run(name, gen):
        outs[name] = gen.generate(prompts, params)
        assert all(len(o.token_ids) == args.new_tokens for o in outs[name])

    if "ours compiled" in sides:  # compiling for this batch size is a one-off cost, reported, not timed below
        w, c = timed(lambda: run("ours compiled", sides["ours compiled"]))
        print(f"batch {b}: first compiled call (compiles) {w:.1f} s wall, {c:.1f} s CPU", flush=True)
    ways = floor_multipliers(mats, b, P)
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeats):
        jobs = [*((n, lambda n=n, g=g: run(n, g)) for n, g in sides.items()),
                *((name, lambda m=m: hf(m)) for name, m in models.items()),
                *((f"floor {way}", matmul_floor(mats, fn, bf16, b, P, args.new_tokens - 1))
                  for way, (fn, bf16) in ways.items())]
        for name, fn in jobs:
            w, c = timed(fn)
            prev = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(prev[0], w), min(prev[1], c))
    mismatch = {name: logprob_mismatch(models["transformers"], prompts, o) for name, o in outs.items()}
    return best, mismatch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time TorchGenerator(compile=True)")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 sides and floor")
    ap.add_argument("--samples-per-prompt", type=int, default=1,
                    help="G > 1: each prompt appears G times in a batch (GRPO's groups; our decoder prefills "
                         "each distinct prompt once); 1: every row is a different prompt")
    args = ap.parse_args()
    global BF16
    BF16 = BF16 and not args.no_bf16
    torch.set_num_threads(args.threads)
    folder = default_model_dir()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    models = {"transformers": model}
    sides = {"ours": TorchGenerator(model, tokenizer=tok)}
    if args.compile:
        sides["ours compiled"] = TorchGenerator(model, tokenizer=tok, compile=True)
    if BF16:
        sides["ours bf16"] = TorchGenerator(model, tokenizer=tok, matmul_dtype="bfloat16")
        models["transformers bf16"] = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    mats = decode_matmuls(model)
    rows, floors = [], []
    for b in args.batches:
        best, mismatch = measure_batch(models, tok, sides, b, args, mats)
        n = b * args.new_tokens
        hf_w, hf_c = best["transformers"]
        for name in [*sides, *models]:
            w, c = best[name]
            low = "bf16" in name
            peer = "transformers bf16" if low else "transformers"
            pw, pc = best[peer]
            mm = mismatch.get(name)
            rows.append([b, name, round(n / w, 1), round(n / c, 1), round(hf_w / w, 2), round(hf_c / c, 2),
                         f"{pw / w:.2f} ({peer})", "" if mm is None else f"{mm[0]:.1e} / {mm[1]:.1e}"])
            print(f"batch {b}: {name} {n / w:.1f} tok/s ({n / c:.1f} per CPU s)"
                  + ("" if mm is None else f", |dlogp| vs fp32 mean {mm[0]:.1e} max {mm[1]:.1e}"), flush=True)
        for prec in ["fp32", *(["bf16"] if BF16 else [])]:
            ways = {k: v for k, v in best.items() if k.startswith(f"floor {prec}")}
            way, (fl_w, fl_c) = min(ways.items(), key=lambda kv: kv[1][1])
            ours_c = best["ours" if prec == "fp32" else "ours bf16"][1]
            floors.append([b, prec, way.removeprefix(f"floor {prec} "), round(n / fl_w, 1), round(n / fl_c, 1),
                           round(hf_c / fl_c, 2), round(ours_c / fl_c, 2),
                           "  ".join(f"{k.removeprefix('floor ')} {n / v[1]:.0f}" for k, v in ways.items())])
    print_table(f"generation, SmolLM2-135M, sampling, {args.new_tokens} new tokens, {args.threads} thread(s), "
                f"{args.samples_per_prompt} sample(s) per prompt; speed-up over transformers fp32 (the baseline) "
                f"and over the same-precision transformers",
                ["batch", "side", "tok/s", "tok/CPU s", "speed-up wall", "speed-up CPU", "same-precision speed-up wall",
                 "|dlogp| vs fp32 mean / max"], rows)
    print_table("matmul floor (the prefill and decode weight matmuls alone, fastest way): the most any decoder "
                "in that precision can reach here",
                ["batch", "precision", "fastest way", "floor tok/s", "floor tok/CPU s",
                 "max speed-up over transformers fp32 (CPU)", "ours: CPU s / floor CPU s",
                 "every way, tok/CPU s"], floors)


if __name__ == "__main__":
    main()
