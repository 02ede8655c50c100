"""GRPO on Ray: generate groups, score them, compute group advantages, update the policy, refit the generator.

    uv run anemone rl grpo                                     # CPU, embedded model, arithmetic task
    uv run anemone rl grpo -c recipe.yaml ray.address=auto     # join a Ray cluster
    uv run anemone rl grpo ray.device=cuda ray.colocated=false ray.generator=vllm   # GPU with vLLM

`train()` reads top to bottom: start workers, evaluate, then per step `grpo_step` and a checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from anemone_core.metrics import MetricsLogger, progress, write_run_config
from anemone_rl import run_dir
from anemone_rl.algorithms import equal_reward_groups, group_advantages
from anemone_rl.data import load_rows, prompt_messages
from anemone_rl.data.lazy import LazyMap
from anemone_rl.data.order import step_indices
from anemone_rl.envs.registry import resolve_reward
from anemone_rl.generation import SamplingParams
from anemone_rl.grpo_config import GRPOConfig
from anemone_rl.policy import build_batch, place_response_values
from anemone_rl.ray_setup import Workers, start_workers


def prompt_tokenizer(tokenizer: Any, max_tokens: int, field: str):
    """row -> (row, prompt ids under the chat template), or None when the prompt is longer than max_tokens."""

    def fn(row: dict[str, Any]) -> tuple[dict, list[int]] | None:
        enc = tokenizer.apply_chat_template(prompt_messages(row, field), add_generation_prompt=True, tokenize=True,
                                            return_dict=True)
        ids = list(enc["input_ids"])
        return (row, ids) if len(ids) <= max_tokens else None

    return fn


def evaluate(w: Workers, items: list[tuple[dict, list[int]]], max_new_tokens: int) -> dict[str, float]:
    """Greedy accuracy on held-out prompts."""
    params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0)
    outs = w.call(w.generator, "generate", [p for _, p in items], params)
    rewards, _ = w.call(w.env, "step", [r for r, _ in items], [o.text or "" for o in outs])
    return {"eval_accuracy": sum(r > 0 for r in rewards) / len(rewards),
            "eval_response_length": sum(len(o.token_ids) for o in outs) / len(outs)}


def grpo_step(cfg: GRPOConfig, w: Workers, items: LazyMap, step: int, pad_id: int) -> dict[str, Any]:
    t_step, cpu_step = time.perf_counter(), time.process_time()
    g = cfg.grpo
    G = g.generations_per_prompt
    chosen, dropped = items.take(step_indices(len(items), step, g.prompts_per_step, cfg.run.seed))
    rows = [r for r, _ in chosen for _ in range(G)]  # prompt-major: rows[p*G + j]
    prompts = [ids for _, ids in chosen for _ in range(G)]
    params = SamplingParams(max_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p, top_k=g.top_k,
                            seed=cfg.run.seed * 1_000_003 + step)
    t0 = time.perf_counter()
    outs = w.call(w.generator, "generate", prompts, params)
    t_gen = time.perf_counter() - t0
    rewards_list, env_counts = w.call(w.env, "step", rows, [o.text or "" for o in outs])
    rewards = torch.tensor(rewards_list, dtype=torch.float32)  # (P*G,)
    train_rewards = rewards
    if cfg.env.shuffle_rewards:  # control run: rewards no longer belong to their responses
        train_rewards = rewards[torch.randperm(len(rewards), generator=torch.Generator().manual_seed(step))]
    adv = group_advantages(train_rewards, G, g.leave_one_out, g.scale_by_std)  # (P*G,)
    equal = equal_reward_groups(train_rewards, G)  # (P,)
    keep = list(range(len(outs)))
    if g.filter_equal_groups:
        keep = [i for i in keep if not bool(equal[i // G])]

    m: dict[str, Any] = {
        "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "accuracy": float((rewards > 0).float().mean()), "equal_reward_groups": float(equal.float().mean()),
        "response_length": sum(len(o.token_ids) for o in outs) / len(outs),
        "truncated": sum(o.finish_reason == "length" for o in outs) / len(outs),
        "reward_errors": env_counts.get("errors", 0), "reward_timeouts": env_counts.get("timeouts", 0),
        "prompts_too_long": dropped, "gen_time_s": t_gen, "gen_tokens_per_s": sum(len(o.token_ids) for o in outs) / max(t_gen, 1e-9),
    }
    # A filtered batch must still give every worker whole micro-batches: keep a multiple, dropping the tail.
    unit = g.micro_batch_size * g.mini_batches * g.policy_workers
    keep = keep[: len(keep) // unit * unit]
    if not keep:
        return m | {"skipped": 1, "train_time_s": 0.0, "refit_time_s": 0.0}
    p_ids = [prompts[i] for i in keep]
    batch = build_batch(p_ids, [outs[i].token_ids for i in keep], pad_id)
    batch["advantages"] = adv[keep]
    batch["gen_logprobs"] = place_response_values([outs[i].logprobs for i in keep], p_ids, batch["response_mask"].shape[1])
    t0 = time.perf_counter()
    if w.reference is not None:
        batch["ref_logprobs"] = w.call(w.reference, "logprobs", batch)
    if g.mini_batches > 1:  # later mini-batches are off-policy: fix the behaviour logprobs now
        batch["old_logprobs"] = w.policy_logprobs(batch)
    stats = w.train_step(batch)
    t_train = time.perf_counter() - t0
    t_refit = w.refit()
    n_tok = float(batch["response_mask"].sum())
    return m | stats | {"skipped": 0, "train_time_s": t_train, "refit_time_s": t_refit,
                        "train_tokens_per_s": n_tok / max(t_train, 1e-9), "step_time_s": time.perf_counter() - t_step,
                        "step_cpu_s": time.process_time() - cpu_step}


def train(cfg: GRPOConfig, stop_after: int | None = None) -> dict[str, Any]:
    """Run GRPO to `cfg.grpo.steps` (or stop after `stop_after` steps, as a kill would) and return a summary."""
    from anemone_automodel.model import load_tokenizer

    out = Path(cfg.run.out).absolute()  # workers may run elsewhere: give them absolute paths
    conf = cfg.model_dump(mode="json")
    # the data and the reward function first: a missing or malformed file, or a reward that does not import, is
    # refused here, before run.out is made (or wiped) and before it could only fail inside a Ray actor
    resolve_reward(cfg.env.reward)
    train_rows = load_rows(cfg.data.train, field="data.train")
    eval_rows = (load_rows(cfg.data.eval, split="test", field="data.eval")[: cfg.data.eval_prompts]
                 if cfg.data.eval else [])
    start, ckpt = run_dir.prepare(out, conf, cfg.run.overwrite, cfg.grpo.steps, "grpo.steps",
                                  type(cfg)().model_dump(mode="json"))
    write_run_config(out, cfg)
    tokenizer = load_tokenizer(cfg.model.path)
    items = LazyMap(train_rows, prompt_tokenizer(tokenizer, cfg.data.max_prompt_tokens, "data.train"))
    eval_items = []
    if eval_rows:
        eval_items = LazyMap(eval_rows, prompt_tokenizer(tokenizer, cfg.data.max_prompt_tokens, "data.eval")).all()
    w = start_workers(cfg, resume_from=ckpt)
    pad_id = int(tokenizer.pad_token_id)
    summary: dict[str, Any] = {"start_step": start, "prompts": len(items)}
    with MetricsLogger(out) as log:
        if start == 0 and eval_items:
            first = evaluate(w, eval_items, cfg.grpo.max_new_tokens)
            log.log(0, **first)
            summary["eval_accuracy_start"] = first["eval_accuracy"]
        last: dict[str, Any] = {}
        for step in progress(range(start, cfg.grpo.steps), description="grpo", disable=not cfg.run.progress):
            last = grpo_step(cfg, w, items, step, pad_id)
            every = cfg.data.eval_every
            if eval_items and every and (step + 1) % every == 0 and step + 1 < cfg.grpo.steps:
                last |= evaluate(w, eval_items, cfg.grpo.max_new_tokens)
            log.log(step + 1, **last)
            done = step + 1 == cfg.grpo.steps
            if done or (cfg.run.checkpoint_every and (step + 1) % cfg.run.checkpoint_every == 0):
                run_dir.save_checkpoint(out, step + 1, conf, lambda d: w.save(d), cfg.run.keep_checkpoints)
            if stop_after is not None and step + 1 - start >= stop_after:
                w.shutdown()
                return summary | {"stopped_at": step + 1}
        if eval_items:
            final = evaluate(w, eval_items, cfg.grpo.max_new_tokens)
            log.log(cfg.grpo.steps, **final)
            summary["eval_accuracy_end"] = final["eval_accuracy"]
    w.save_model(out / "model")
    w.shutdown()
    return summary | {"steps": cfg.grpo.steps, "last": last, "out": str(out), "model": str(out / "model")}
