"""SFT in one process with automodel's chat tokenization, padding collate and causal-LM loss.

    uv run anemone rl sft                                   # CPU, embedded model, arithmetic answers
    uv run anemone rl sft data.train=chats.jsonl sft.steps=200
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from anemone_core.errors import AnemoneError
from anemone_core.metrics import MetricsLogger, progress, write_run_config
from anemone_rl import run_dir
from anemone_rl.data import load_rows, prompt_messages
from anemone_rl.data.lazy import LazyMap
from anemone_rl.data.order import step_indices
from anemone_rl.local_state import LocalState
from anemone_rl.policy import load_policy
from anemone_rl.sft_config import SFTConfig


def sft_tokenizer(tokenizer: Any, max_length: int, field: str):
    """row -> {"input_ids", "labels"} with automodel's tokenization: `messages` (chat), `prompt`/`completion`,
    or a verifiable task's `prompt`/`answer` (trained on the answer)."""
    from anemone_automodel.data.chat import tokenize_chat, tokenize_prompt_completion

    def fn(row: dict[str, Any]) -> dict:
        if "messages" in row:
            return tokenize_chat(tokenizer, row["messages"], max_length)
        if "prompt" in row and "completion" in row:
            return tokenize_prompt_completion(tokenizer, row["prompt"], row["completion"], max_length)
        if "prompt" in row and "answer" in row:
            answer = {"role": "assistant", "content": str(row["answer"])}
            return tokenize_chat(tokenizer, [*prompt_messages(row, field), answer], max_length)
        raise AnemoneError(f"{field}: a row has keys {sorted(row)}; SFT rows need `messages`, or `prompt` and "
                           f"`completion`, or `prompt` and `answer`")

    return fn


def sft_step(state: LocalState, examples: list[dict], micro: int, pad_id: int) -> dict[str, float]:
    from anemone_automodel.data.collate import pad_collate
    from anemone_automodel.loss import causal_lm_loss, count_trained_tokens

    state.model.train()
    batches = [pad_collate(examples[i : i + micro], pad_id) for i in range(0, len(examples), micro)]
    total = sum(int(count_trained_tokens(b["labels"])) for b in batches)
    loss_sum = 0.0
    for b in batches:  # sum-reduced losses over the global token count: exact gradient accumulation
        logits = state.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        loss = causal_lm_loss(logits, b["labels"], reduction="sum") / max(total, 1)
        loss.backward()
        loss_sum += float(loss.detach())
    return {"loss": loss_sum, "tokens": total, "grad_norm": state.step(), "lr": state.lr()}


def greedy_accuracy(model: Any, tokenizer: Any, rows: list[dict[str, Any]], max_new_tokens: int,
                    reward: str = "math") -> float:
    """Fraction of rows answered correctly by greedy generation (the verifiable-task accuracy)."""
    from anemone_rl.envs import build_env
    from anemone_rl.generation import SamplingParams, TorchGenerator

    prompts = [list(tokenizer.apply_chat_template(prompt_messages(r), add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"]) for r in rows]
    outs = TorchGenerator(model, tokenizer=tokenizer).generate(prompts, SamplingParams(max_new_tokens, 0.0))
    env = build_env(reward)
    rewards = [r.reward for r in env.step(rows, [o.text or "" for o in outs])]
    return sum(r > 0 for r in rewards) / max(len(rewards), 1)


def train(cfg: SFTConfig, stop_after: int | None = None) -> dict[str, Any]:
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    out = Path(cfg.run.out)
    conf = cfg.model_dump(mode="json")
    # the data first: a missing or malformed file is refused before run.out is made (or wiped)
    train_rows = load_rows(cfg.data.train, field="data.train")
    eval_rows = load_rows(cfg.data.eval, split="test", field="data.eval")[: cfg.data.eval_prompts] if cfg.data.eval else []
    start, ckpt = run_dir.prepare(out, conf, cfg.run.overwrite, cfg.sft.steps, "sft.steps",
                                  type(cfg)().model_dump(mode="json"))
    write_run_config(out, cfg)
    torch.manual_seed(cfg.run.seed)
    model, tokenizer = load_policy(str(ckpt / "model") if ckpt else cfg.model.path, cfg.model.dtype)
    pad_id = int(tokenizer.pad_token_id)
    examples = LazyMap(train_rows, sft_tokenizer(tokenizer, cfg.sft.max_length, "data.train"))
    state = LocalState(model, tokenizer, cfg.optim, cfg.sft.steps)
    if ckpt is not None:
        state.load_optimizer(ckpt)
    summary: dict[str, Any] = {"start_step": start, "examples": len(examples)}
    last: dict[str, Any] = {}
    with MetricsLogger(out) as log:
        if start == 0 and eval_rows:
            summary["eval_accuracy_start"] = greedy_accuracy(model, tokenizer, eval_rows, cfg.data.eval_max_new_tokens)
            log.log(0, eval_accuracy=summary["eval_accuracy_start"])
        for step in progress(range(start, cfg.sft.steps), description="sft", disable=not cfg.run.progress):
            batch, _ = examples.take(step_indices(len(examples), step, cfg.sft.batch_size, cfg.run.seed))
            last = sft_step(state, batch, cfg.sft.micro_batch_size, pad_id)
            log.log(step + 1, **last)
            if step + 1 == cfg.sft.steps or (cfg.run.checkpoint_every and (step + 1) % cfg.run.checkpoint_every == 0):
                run_dir.save_checkpoint(out, step + 1, conf, state.save, cfg.run.keep_checkpoints)
            if stop_after is not None and step + 1 - start >= stop_after:
                return summary | {"stopped_at": step + 1}
        if eval_rows:
            summary["eval_accuracy_end"] = greedy_accuracy(model, tokenizer, eval_rows, cfg.data.eval_max_new_tokens)
            log.log(cfg.sft.steps, eval_accuracy=summary["eval_accuracy_end"])
    from anemone_core.io import atomic_dir

    with atomic_dir(out / "model", overwrite=True) as tmp:
        state.save_hf(tmp)
    return summary | {"steps": cfg.sft.steps, "last": last, "out": str(out), "model": str(out / "model")}
