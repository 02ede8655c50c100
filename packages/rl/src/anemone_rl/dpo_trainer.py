"""DPO in one process: policy and frozen reference side by side, pairs batched chosen-then-rejected.

    uv run anemone rl dpo                                  # CPU, embedded model, arithmetic preference pairs
    uv run anemone rl dpo -c recipe.yaml dpo.beta=0.2 data.train=pairs.jsonl
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from anemone_core.metrics import MetricsLogger, progress, write_run_config
from anemone_rl import run_dir
from anemone_rl.algorithms import dpo_loss, sequence_logprobs, shifted_token_logprobs
from anemone_rl.data import load_rows, normalize_preference
from anemone_rl.data.arithmetic import preference_pairs
from anemone_rl.data.lazy import LazyMap
from anemone_rl.data.order import step_indices
from anemone_rl.dpo_config import DPOConfig
from anemone_rl.local_state import LocalState
from anemone_rl.policy import load_policy

# The rejected answers of the built-in held-out pairs are drawn with a fixed seed, not run.seed: runs with
# different seeds are scored on the same pairs (1 is what run.seed=0 drew before, so its figures still hold).
EVAL_PAIRS_SEED = 1


def load_preference_rows(source: str, field: str, seed: int = 0, per_question: int = 1) -> list[dict[str, Any]]:
    """Preference rows; the built-in arithmetic task is turned into pairs (`per_question` nearby wrong answers
    rejected, each in its own pair)."""
    if source.split(":")[0] == "arithmetic":
        rng = random.Random(seed)
        return [p for r in load_rows(source, field=field) for p in preference_pairs(r, rng, per_question)]
    return load_rows(source, field=field)


def pair_tokenizer(tokenizer: Any, max_length: int, field: str):
    """row -> (chosen, rejected), each {"input_ids", "labels"} through automodel's chat tokenization (labels
    -100 outside assistant turns); None when either side is longer than max_length."""
    from anemone_automodel.data.chat import tokenize_chat

    def fn(row: dict[str, Any]) -> tuple[dict, dict] | None:
        chosen, rejected = normalize_preference(row, field)
        c, r = tokenize_chat(tokenizer, chosen), tokenize_chat(tokenizer, rejected)
        return (c, r) if max(len(c["input_ids"]), len(r["input_ids"])) <= max_length else None

    return fn


def pair_logprobs(model: Any, pairs: list[tuple[dict, dict]], pad_id: int, average: bool,
                  share: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
    """Sequence logprobs of the chosen (b,) and rejected (b,) responses, in one forward of 2b sequences.

    Also returns the batch with its logits (2b, L-first, V) and labels cut to the same columns, for an SFT term
    on the chosen half. The LM head runs only from the first column that scores a response token (`first`):
    prompts are most of a short-answer pair, and the head is a fifth of a small model's forward.

    With `share`, each pair's common prompt runs once and both answers on its KV cache (`shared_prompt.py`;
    the same logprobs to float rounding); no logits are kept then (None for the batch)."""
    from anemone_automodel.data.collate import pad_collate

    batch = pad_collate([c for c, _ in pairs] + [r for _, r in pairs], pad_id)  # (2b, L)
    L = batch["input_ids"].shape[1]
    mask = (batch["labels"][:, 1:] != -100).float()  # (2b, L-1): entries scoring response tokens
    b = len(pairs)
    if share:
        from anemone_rl.shared_prompt import shared_prompt_logprobs

        shared = shared_prompt_logprobs(model, batch["input_ids"], batch["attention_mask"], mask)
        if shared is not None:
            seq = sequence_logprobs(shared[0], mask, average=average)  # (2b,)
            return seq[:b], seq[b:], None
    first = int(mask.any(0).nonzero()[0]) if bool(mask.any()) else 0
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   logits_to_keep=L - first).logits  # (2b, L-first, V)
    lp = shifted_token_logprobs(logits, batch["input_ids"][:, first:])  # (2b, L-1-first)
    seq = sequence_logprobs(lp, mask[:, first:], average=average)  # (2b,)
    return seq[:b], seq[b:], batch | {"logits": logits, "labels": batch["labels"][:, first:]}


def dpo_step(state: LocalState, reference: Any, pairs: list[tuple[dict, dict]], cfg: DPOConfig, pad_id: int) -> dict[str, float]:
    """One optimizer step over `pairs`, in micro-batches; returns batch-mean metrics."""
    from anemone_automodel.loss import causal_lm_loss

    d = cfg.dpo
    state.model.train()
    sums: dict[str, float] = {"loss": 0.0, "accuracy": 0.0, "margin": 0.0, "chosen_reward": 0.0,
                              "rejected_reward": 0.0, "sft_loss": 0.0}
    ipo = d.loss_type == "ipo"
    for start in range(0, len(pairs), d.micro_batch_size):
        mb = pairs[start : start + d.micro_batch_size]
        with torch.no_grad():
            rc, rr, _ = pair_logprobs(reference, mb, pad_id, ipo, d.share_prompt_forward)
        # the SFT term needs the chosen answers' logits, which the shared forward does not keep
        pc, pr, batch = pair_logprobs(state.model, mb, pad_id, ipo, d.share_prompt_forward and d.sft_weight == 0)
        losses, st = dpo_loss(pc, pr, rc, rr, d.beta, d.loss_type, d.label_smoothing)  # (b,)
        loss = losses.sum() / len(pairs)
        if d.sft_weight > 0:  # NLL of the chosen responses (the first b sequences), token mean over the batch
            assert batch is not None
            b = len(mb)
            sft = causal_lm_loss(batch["logits"][:b], batch["labels"][:b], reduction="mean")
            loss = loss + d.sft_weight * sft * len(mb) / len(pairs)
            sums["sft_loss"] += float(sft.detach()) * len(mb)
        loss.backward()
        sums["loss"] += float(losses.detach().sum())
        for k in ("accuracy", "margin", "chosen_reward", "rejected_reward"):
            sums[k] += float(st[k].sum())
    grad_norm = state.step()
    return {k: v / len(pairs) for k, v in sums.items()} | {"grad_norm": grad_norm, "lr": state.lr()}


@torch.no_grad()
def evaluate(state: LocalState, pairs: list[tuple[dict, dict]], ref_cache: tuple[torch.Tensor, torch.Tensor],
             cfg: DPOConfig, pad_id: int) -> dict[str, float]:
    """Held-out preference accuracy: implicit reward (policy vs reference) and raw likelihood."""
    state.model.eval()
    ipo = cfg.dpo.loss_type == "ipo"
    pcs, prs = [], []
    for start in range(0, len(pairs), cfg.dpo.micro_batch_size):
        pc, pr, _ = pair_logprobs(state.model, pairs[start : start + cfg.dpo.micro_batch_size], pad_id, ipo,
                                  cfg.dpo.share_prompt_forward)
        pcs.append(pc)
        prs.append(pr)
    pc, pr = torch.cat(pcs), torch.cat(prs)
    loss, st = dpo_loss(pc, pr, ref_cache[0], ref_cache[1], cfg.dpo.beta, cfg.dpo.loss_type)
    state.model.train()
    return {"eval_loss": float(loss.mean()), "eval_reward_accuracy": float(st["accuracy"].mean()),
            "eval_likelihood_accuracy": float((pc > pr).float().mean()), "eval_margin": float(st["margin"].mean())}


def train(cfg: DPOConfig, stop_after: int | None = None) -> dict[str, Any]:
    """Run DPO to `cfg.dpo.steps` (or stop after `stop_after` steps, as a kill would) and return a summary."""
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    out = Path(cfg.run.out)
    conf = cfg.model_dump(mode="json")
    # the data first: a missing or malformed file is refused before run.out is made (or wiped)
    train_rows = load_preference_rows(cfg.data.train, "data.train", cfg.run.seed, cfg.data.pairs_per_question)
    eval_rows = (load_preference_rows(cfg.data.eval, "data.eval", EVAL_PAIRS_SEED)[: cfg.data.eval_pairs]
                 if cfg.data.eval else [])
    start, ckpt = run_dir.prepare(out, conf, cfg.run.overwrite, cfg.dpo.steps, "dpo.steps",
                                  type(cfg)().model_dump(mode="json"))
    write_run_config(out, cfg)
    torch.manual_seed(cfg.run.seed)
    model, tokenizer = load_policy(str(ckpt / "model") if ckpt else cfg.model.path, cfg.model.dtype)
    reference, _ = load_policy(cfg.model.path, cfg.model.dtype, train=False)
    pad_id = int(tokenizer.pad_token_id)
    pairs = LazyMap(train_rows, pair_tokenizer(tokenizer, cfg.dpo.max_length, "data.train"))
    eval_pairs: list[tuple[dict, dict]] = []
    if eval_rows:
        eval_pairs = LazyMap(eval_rows, pair_tokenizer(tokenizer, cfg.dpo.max_length, "data.eval")).all()
    state = LocalState(model, tokenizer, cfg.optim, cfg.dpo.steps)
    if ckpt is not None:
        state.load_optimizer(ckpt)
    ref_cache = (torch.zeros(0), torch.zeros(0))
    if eval_pairs:  # the reference never changes: score the held-out pairs once
        ipo = cfg.dpo.loss_type == "ipo"
        with torch.no_grad():
            chunks = [pair_logprobs(reference, eval_pairs[i : i + cfg.dpo.micro_batch_size], pad_id, ipo,
                                    cfg.dpo.share_prompt_forward)
                      for i in range(0, len(eval_pairs), cfg.dpo.micro_batch_size)]
        ref_cache = (torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks]))
    summary: dict[str, Any] = {"start_step": start, "pairs": len(pairs)}
    last: dict[str, Any] = {}
    with MetricsLogger(out) as log:
        if start == 0 and eval_pairs:
            first = evaluate(state, eval_pairs, ref_cache, cfg, pad_id)
            log.log(0, **first)
            summary["eval_start"] = first
        for step in progress(range(start, cfg.dpo.steps), description="dpo", disable=not cfg.run.progress):
            batch, dropped = pairs.take(step_indices(len(pairs), step, cfg.dpo.batch_size, cfg.run.seed))
            last = dpo_step(state, reference, batch, cfg, pad_id) | {"dropped_too_long": dropped}
            every = cfg.data.eval_every
            if eval_pairs and every and (step + 1) % every == 0 and step + 1 < cfg.dpo.steps:
                last |= evaluate(state, eval_pairs, ref_cache, cfg, pad_id)
            log.log(step + 1, **last)
            if step + 1 == cfg.dpo.steps or (cfg.run.checkpoint_every and (step + 1) % cfg.run.checkpoint_every == 0):
                run_dir.save_checkpoint(out, step + 1, conf, state.save, cfg.run.keep_checkpoints)
            if stop_after is not None and step + 1 - start >= stop_after:
                return summary | {"stopped_at": step + 1}
        if eval_pairs:
            final = evaluate(state, eval_pairs, ref_cache, cfg, pad_id)
            log.log(cfg.dpo.steps, **final)
            summary["eval_end"] = final
    from anemone_core.io import atomic_dir

    with atomic_dir(out / "model", overwrite=True) as tmp:
        state.save_hf(tmp)
    return summary | {"steps": cfg.dpo.steps, "last": last, "out": str(out), "model": str(out / "model")}
