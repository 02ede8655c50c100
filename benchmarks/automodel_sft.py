"""SFT tokens/s: anemone-automodel vs transformers.Trainer vs TRL SFTTrainer, side by side in one run.

Same model (the embedded SmolLM2-135M-Instruct, fp32), same data (the built-in 2-digit addition chats,
tokenized once with `tokenize_chat`, right-truncated to 128 tokens, in the same fixed order, no length
grouping), same batches (8, padded to the longest), same optimizer (AdamW lr 1e-4, betas 0.9/0.95, no weight
decay, constant LR, clip 1.0; the peers use their default implementation, "adamw_torch_fused", as ours does),
CPU. Full fine-tune and LoRA r=16 (the same peft-wrapped model, same init, for all three).
Prints tokens/s (non-pad tokens) over the measured steps and the loss of every step for each trainer, both per
wall-clock second and per CPU second of this process (with 1 thread the CPU-time figure is robust to other jobs
sharing the machine; the wall-clock one is not). With `--rounds 2` the three trainers run A B C A B C and the
figures pool both rounds. `--profile` prints a torch.profiler table of one measured step of ours and of Trainer.

    uv run python benchmarks/automodel_sft.py [--steps 6] [--threads 1] [--rounds 1] [--modes full lora] [--profile]
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch

os.environ.setdefault("ANEMONE_NO_PROGRESS", "1")
SEQ, BATCH, LR = 128, 8, 1e-4


def data(tokenizer, n):
    from anemone_automodel.data.builtin import builtin_chats
    from anemone_automodel.data.chat import tokenize_chat

    return [tokenize_chat(tokenizer, r["messages"], SEQ) for r in builtin_chats()[:n]]


def fresh_model(mode):
    from anemone_automodel.lora import apply_lora
    from anemone_automodel.model import load_model

    torch.manual_seed(0)
    model = load_model(None, dtype=torch.float32)
    model.config.use_cache = False
    return apply_lora(model, r=16, alpha=32) if mode == "lora" else model


class StepProfiler:
    """torch.profiler around one chosen step; prints the ops that took the most CPU time."""

    def __init__(self, step, title):
        self.step, self.title, self.prof = step, title, None

    def begin(self, i):
        if i == self.step:
            from torch.profiler import ProfilerActivity, profile

            self.prof = profile(activities=[ProfilerActivity.CPU])
            self.prof.__enter__()

    def end(self, i):
        if i == self.step and self.prof is not None:
            self.prof.__exit__(None, None, None)
            print(f"\n== profile of one step: {self.title}")
            print(self.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


def run_ours(model, examples, pad_id, steps, profiler=None):
    from anemone_automodel.data.loader import BatchPlan
    from anemone_automodel.lora import fuse_lora_forward, is_peft
    from anemone_automodel.model import sparse_tied_embedding_grad
    from anemone_automodel.optim import build_optimizer
    from anemone_automodel.trainer import train_step

    if is_peft(model):
        fuse_lora_forward(model)  # as the trainer's build_model does
    sparse_tied_embedding_grad(model)  # as train() does
    model.train()
    plan = BatchPlan(examples, micro_batch_size=BATCH, shuffle=False, pad_id=pad_id)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(params, lr=LR, betas=(0.9, 0.95))
    losses, times, cpu, tokens = [], [], [], []
    for i in range(steps + 1):
        mbs = plan.next_step()
        if profiler:
            profiler.begin(i)
        t0, c0 = time.perf_counter(), time.process_time()
        s = train_step(model, opt, mbs, device="cpu", dp_group=None, dp_size=1, fsdp=False, autocast_dtype=None,
                       max_grad_norm=1.0, params=params)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if profiler:
            profiler.end(i)
        losses.append(s["loss"])
        tokens.append(s["tokens"])
    return losses, times, cpu, tokens


def run_hf(model, examples, tokenizer, steps, use_trl, profiler=None):
    import datasets
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    ds = datasets.Dataset.from_list(examples)
    common = dict(output_dir="/tmp/anemone-bench-sft", per_device_train_batch_size=BATCH, max_steps=steps + 1,
                  learning_rate=LR, adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.0, lr_scheduler_type="constant",
                  warmup_steps=0, max_grad_norm=1.0, logging_steps=1, report_to=[], save_strategy="no",
                  use_cpu=True, dataloader_num_workers=0, seed=0, disable_tqdm=True, bf16=False, fp16=False,
                  gradient_checkpointing=False)  # optim: their default
    assert TrainingArguments(output_dir="/tmp/x").optim == "adamw_torch_fused"  # what the docstring states
    times, cpu, losses = [], [], []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if profiler:
                profiler.begin(len(times))
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)
            cpu.append(time.process_time() - self.c0)
            if profiler:
                profiler.end(len(times) - 1)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    collator = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
    if use_trl:
        from trl import SFTConfig, SFTTrainer

        cfg = SFTConfig(**common, max_length=SEQ, packing=False, padding_free=False)
        trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tokenizer,
                             data_collator=collator, callbacks=[Clock()])
    else:
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=ds,
                          data_collator=collator, callbacks=[Clock()])
    # Same order as ours: no shuffling.
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(ds)
    trainer.train()
    tokens = [sum(len(e["input_ids"]) for e in examples[i * BATCH:(i + 1) * BATCH]) for i in range(steps + 1)]
    return losses, times, cpu, tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6, help="measured steps (one more is run first as warm-up)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1, help="run the three trainers this many times, interleaved")
    ap.add_argument("--modes", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    ap.add_argument("--profile", action="store_true", help="profile the first measured step of ours and Trainer")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from anemone_automodel.model import load_tokenizer
    from anemone_core.cli import print_table

    tok = load_tokenizer(None)
    examples = data(tok, BATCH * (args.steps + 1))
    names = ("anemone", "transformers.Trainer", "trl.SFTTrainer")
    rows, loss_rows = [], []
    for mode in args.modes:
        base = fresh_model(mode)
        sums = {n: [0, 0.0, 0.0] for n in names}  # measured tokens, wall s, CPU s
        for rnd in range(args.rounds):
            for name in names:
                model = copy.deepcopy(base)
                prof = StepProfiler(1, f"{mode} {name}") if args.profile and rnd == 0 and "trl" not in name else None
                if name == "anemone":
                    losses, times, cpu, tokens = run_ours(model, examples, tok.pad_token_id, args.steps, prof)
                else:
                    losses, times, cpu, tokens = run_hf(model, examples, tok, args.steps, name.startswith("trl"), prof)
                # Skip the warm-up step.
                sums[name][0] += sum(tokens[1:])
                sums[name][1] += sum(times[1:])
                sums[name][2] += sum(cpu[1:])
                loss_rows.append([mode, name, str(rnd)] + [f"{x:.4f}" for x in losses])
                del model
        ours_tok, ours_wall, ours_cpu = sums["anemone"]
        for name, (tok_n, wall, cpu_s) in sums.items():
            rows.append([mode, name, f"{tok_n / wall:.1f}", f"{(ours_tok / ours_wall) / (tok_n / wall):.2f}x",
                         f"{tok_n / cpu_s:.1f}", f"{(ours_tok / ours_cpu) / (tok_n / cpu_s):.2f}x"])
    print_table(f"SFT tokens/s, SmolLM2-135M fp32 CPU, seq<={SEQ} batch {BATCH}, {args.threads} thread(s), "
                f"{args.steps} steps x {args.rounds} round(s)",
                ["mode", "trainer", "tokens/wall-s", "anemone / this", "tokens/CPU-s", "anemone / this"], rows)
    print_table("loss per step (step 0 = warm-up)",
                ["mode", "trainer", "round"] + [str(i) for i in range(args.steps + 1)], loss_rows)


if __name__ == "__main__":
    main()
