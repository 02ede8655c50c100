"""GRPO step time: anemone-rl vs TRL's GRPOTrainer, same model, prompts, rewards and settings, on CPU.

    uv run python benchmarks/rl_grpo_step.py [--steps 3] [--threads 1] [--ray]

Both: the embedded SmolLM2-135M-Instruct in fp32, arithmetic prompts, 4 prompts x 4 generations, 24 new
tokens, temperature 1, token-level loss, clip 0.2 / 0.28, k3 KL with beta 0.01 to a frozen reference,
one optimizer step per generation batch, the math verifier as reward. The first step is a warm-up for both
and is left out; the table gives the median of the remaining steps, in wall seconds and in CPU seconds of the
process (everything runs in it: our in-process workers, TRL's trainer), which other jobs on a shared machine
distort far less (with `--ray` our workers are other processes: the CPU column then counts only the driver).
`--rounds 2` runs ours, TRL, ours, TRL, pooling the steps of each side. `--ablate` also runs ours without the
shared-prompt forward (`grpo.share_prompt_forward=false`: every row runs its prompt, as TRL does) and ours with
bf16 generation matmuls (`grpo.gen_matmul_dtype=bfloat16`, not TRL's setting: its generation is fp32), each
as its own column of the same table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from anemone_core.cli import print_table

P, G, NEW = 4, 4, 24


def ours(steps: int, threads: int, use_ray: bool, extra: tuple[str, ...] = ()) -> tuple[list[float], list[float]]:
    from anemone_core.config import load_config
    from anemone_core.metrics import read_metrics
    from anemone_rl.grpo_config import GRPOConfig
    from anemone_rl.grpo_trainer import train

    out = tempfile.mkdtemp(prefix="bench-grpo-")
    cfg = load_config(GRPOConfig, None, [
        f"run.out={out}/run", "run.progress=false", f"run.threads={threads}", f"ray.enabled={str(use_ray).lower()}",
        f"grpo.steps={steps}", f"grpo.prompts_per_step={P}", f"grpo.generations_per_prompt={G}",
        f"grpo.max_new_tokens={NEW}", "grpo.micro_batch_size=16", "grpo.kl_beta=0.01", "data.eval=null",
        "optim.lr=1e-6", *extra])
    train(cfg)
    rows = [r for r in read_metrics(f"{out}/run/metrics.jsonl") if "step_time_s" in r]
    return [r["step_time_s"] for r in rows], [r["step_cpu_s"] for r in rows]


def trl(steps: int, threads: int) -> tuple[list[float], list[float]]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from anemone_core.models import default_model_dir
    from anemone_rl.data import load_rows
    from anemone_rl.envs.math_env import math_reward

    torch.set_num_threads(threads)
    folder = default_model_dir()
    rows = load_rows("arithmetic:train")[: P * (steps + 1)]
    ds = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])

    def reward(completions, answer, **_):
        return [math_reward({"answer": a}, c[0]["content"]) for c, a in zip(completions, answer, strict=True)]

    times: list[float] = []
    cpus: list[float] = []

    class Timer(TrainerCallback):  # a step = generate, score, reference, train: TRL generates inside the step
        def on_step_begin(self, args, state, control, **kw):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)
            cpus.append(time.process_time() - self.c0)

    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-trl-"), use_cpu=True, bf16=False, gradient_checkpointing=False,
        per_device_train_batch_size=P * G, num_generations=G, max_completion_length=NEW, temperature=1.0,
        beta=0.01, epsilon=0.2, epsilon_high=0.28, loss_type="dapo", learning_rate=1e-6, max_steps=steps,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, seed=0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=ds,
                          processing_class=AutoTokenizer.from_pretrained(folder), callbacks=[Timer()])
    trainer.train()
    return times, cpus


ABLATIONS = {"no prompt sharing": ("grpo.share_prompt_forward=false",),
             "bf16 generation": ("grpo.gen_matmul_dtype=bfloat16",)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ray", action="store_true", help="run our workers as Ray actors (colocated)")
    ap.add_argument("--rounds", type=int, default=1, help="alternate ours and TRL this many times")
    ap.add_argument("--ablate", action="store_true", help="also run ours without prompt sharing, and with bf16 "
                                                          "generation matmuls")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ours_name = "anemone-rl" + (" (Ray)" if args.ray else " (in-process)")
    sides = {ours_name: (), **(ABLATIONS if args.ablate else {})}
    wall: dict[str, list[float]] = {k: [] for k in [*sides, "TRL GRPOTrainer"]}
    cpu: dict[str, list[float]] = {k: [] for k in wall}
    for _ in range(args.rounds):
        for name, extra in sides.items():
            w, c = ours(args.steps, args.threads, args.ray, extra)
            print(f"{name} step wall s:", [round(x, 2) for x in w], "CPU s:", [round(x, 2) for x in c], flush=True)
            wall[name] += w[1:]  # the first step of each run is a warm-up
            cpu[name] += c[1:]
        w, c = trl(args.steps, args.threads)
        print("TRL step wall s:", [round(x, 2) for x in w], "CPU s:", [round(x, 2) for x in c], flush=True)
        wall["TRL GRPOTrainer"] += w[1:]
        cpu["TRL GRPOTrainer"] += c[1:]
    med = statistics.median
    trl_w, trl_c = med(wall["TRL GRPOTrainer"]), med(cpu["TRL GRPOTrainer"])
    rows = [[name, round(med(wall[name]), 2), round(med(cpu[name]), 2), round(trl_w / med(wall[name]), 2),
             round(trl_c / med(cpu[name]), 2)] for name in wall]
    print_table(f"GRPO step, SmolLM2-135M fp32 CPU, {P}x{G} sequences, {NEW} new tokens, {args.threads} thread(s)",
                ["side", "median step, wall s", "median step, CPU s", "speed-up over TRL (wall)",
                 "speed-up over TRL (CPU)"], rows)


if __name__ == "__main__":
    main()
