"""The training loop: `train(cfg)` reads top to bottom; `train_step` is one optimizer step.

Loss normalisation: every micro-batch's *summed* token loss is divided by the number of trained tokens in
the whole global batch (all micro-batches on all data-parallel ranks), so the gradient is the same whatever
the split: 4 x 1 accumulation == 1 x 4, 2 FSDP ranks == 1 rank. FSDP averages gradients over dp, hence the
factor dp_size.

CPU: `torchrun --nproc-per-node 2 -m anemone_automodel.run finetune parallel.tp=2 lora.enabled=false`
GPU: `torchrun --nproc-per-node 8 -m anemone_automodel.run finetune -c recipe.yaml parallel.tp=2`
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from anemone_automodel import checkpoint as ckpt
from anemone_automodel.build import build_examples, build_model, build_run_dir
from anemone_automodel.config import AutoModelConfig
from anemone_automodel.data.loader import BatchPlan
from anemone_automodel.loss import causal_lm_loss, count_trained_tokens
from anemone_automodel.metrics import flops_per_token, peak_memory_gb, peak_tflops, step_bar
from anemone_automodel.model import sparse_tied_embedding_grad
from anemone_automodel.optim import build_optimizer, build_scheduler
from anemone_automodel.outputs import save_adapter, save_consolidated, save_merged
from anemone_automodel.parallelize import (
    apply_activation_checkpointing,
    apply_fsdp,
    apply_tp,
    clip_grad_norm_,
)
from anemone_automodel.sparse_loss import accepts_logits_to_keep, sparse_causal_lm_loss
from anemone_core.metrics import MetricsLogger, write_run_config
from anemone_core.parallel import ParallelDims, build_device_mesh, init_distributed

# Test hook: "N" hard-exits the process right after step N (and its checkpoint); "N:raise" raises instead.
KILL_ENV = "ANEMONE_AUTOMODEL_KILL_AT_STEP"


def _all_reduce(t: torch.Tensor, group: Any) -> torch.Tensor:
    if group is not None:
        dist.all_reduce(t, group=group)
    return t


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, micro_batches: list[dict[str, torch.Tensor]],
               *, device: str, dp_group: Any, dp_size: int, fsdp: bool, autocast_dtype: torch.dtype | None,
               max_grad_norm: float | None, params: list[torch.nn.Parameter],
               sparse_logits: bool = True) -> dict[str, float]:
    """Forward/backward over the micro-batches, clip, step. Returns loss (per trained token), grad norm, tokens."""
    local_tokens = sum(count_trained_tokens(mb["labels"]) for mb in micro_batches)
    global_tokens = _all_reduce(torch.as_tensor(local_tokens, dtype=torch.float32, device=device), dp_group)
    loss_sum = torch.zeros((), device=device)
    for i, mb in enumerate(micro_batches):
        if fsdp:  # reduce-scatter gradients once, after the last micro-batch
            model.set_requires_gradient_sync(i == len(micro_batches) - 1)
        inputs = {k: v for k, v in mb.items() if k in ("input_ids", "attention_mask", "position_ids")}
        ctx = torch.autocast(device.split(":")[0], dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
        with ctx:
            if sparse_logits:  # the model up to the last trained position, the LM head on trained rows only
                loss = sparse_causal_lm_loss(model, inputs, mb["labels"], device)
            else:
                logits = model(**{k: v.to(device) for k, v in inputs.items()}, use_cache=False).logits  # (B, T, V)
                loss = causal_lm_loss(logits, mb["labels"].to(device), reduction="sum")
        (loss * dp_size / global_tokens.clamp(min=1)).backward()
        loss_sum += loss.detach()
    grad_norm = clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss_total = _all_reduce(loss_sum, dp_group) / global_tokens.clamp(min=1)
    tokens = sum(int(mb["num_tokens"]) for mb in micro_batches)
    tokens = int(_all_reduce(torch.tensor(float(tokens), device=device), dp_group))
    return {"loss": float(loss_total), "grad_norm": float(grad_norm), "tokens": tokens,
            "trained_tokens": int(global_tokens)}


def train(cfg: AutoModelConfig, keep_model: bool = False) -> dict[str, Any]:
    """Run one recipe end to end (single process or under torchrun). Returns a summary (rank 0's view);
    with `keep_model`, also the trained model object under "model" (for tests and notebooks)."""
    info = init_distributed(cfg.parallel.timeout_s)
    dims = ParallelDims(dp=cfg.parallel.dp, tp=cfg.parallel.tp).resolve(info.world_size)
    device = info.device
    run_dir = build_run_dir(cfg, info.rank)

    # Model: build, check against the layout, shard (TP first, then FSDP over dp).
    model, tokenizer, model_dir = build_model(cfg, device)
    hf_cfg = model.config
    dims.check_model(hf_cfg.num_attention_heads, getattr(hf_cfg, "num_key_value_heads", None))
    mesh = build_device_mesh(dims, device.split(":")[0]) if info.world_size > 1 else None
    if cfg.train.activation_checkpointing:
        apply_activation_checkpointing(model)
    if dims.tp > 1:
        apply_tp(model, mesh["tp"])
    fsdp = dims.dp > 1
    if fsdp:
        apply_fsdp(model, mesh["dp"])
    sparse_tied_embedding_grad(model)  # a no-op for sharded or untied embeddings
    dp_group = mesh["dp"].get_group() if mesh is not None and dims.dp > 1 else None
    dp_rank = mesh["dp"].get_local_rank() if mesh is not None else 0

    # Data, optimizer, schedule.
    examples = build_examples(cfg, tokenizer)
    plan = BatchPlan(examples, micro_batch_size=cfg.train.micro_batch_size, grad_accum=cfg.train.grad_accum,
                     dp_size=dims.dp, dp_rank=dp_rank, seed=cfg.train.seed, shuffle=cfg.data.shuffle,
                     pack=cfg.data.pack, seq_len=cfg.data.seq_len, pad_id=tokenizer.pad_token_id)
    if info.is_main:  # after the model and data are built: a run that fails there leaves no config behind
        write_run_config(run_dir, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    o = cfg.optim
    optimizer = build_optimizer(params, o.lr, o.weight_decay, o.betas, o.eps)
    scheduler = build_scheduler(optimizer, o.warmup_steps, cfg.train.steps, o.min_lr_ratio)
    state_info = {"fingerprint": ckpt.fingerprint(model, str(model_dir)), "units_per_step": plan.units_per_step,
                  "layout": dims.as_dict()}

    # Resume: model, optimizer, scheduler, data position and RNG from the latest checkpoint.
    start = 0
    ckpt_root = run_dir / "checkpoints"
    latest = ckpt.latest_checkpoint(ckpt_root) if cfg.checkpoint.resume else None
    if latest is not None:
        ckpt.check_resumable(ckpt.read_train_state(latest), state_info, latest)
        state = ckpt.load_train_state(latest, model, optimizer, scheduler)
        plan.load_state_dict(state["data"])
        start = state["step"]

    autocast_dtype = torch.bfloat16 if device.startswith("cuda") and cfg.model.dtype != "float32" else None
    sparse_logits = accepts_logits_to_keep(model)
    fpt = flops_per_token(model, cfg.data.seq_len)
    peak = peak_tflops(device, cfg.metrics.peak_tflops)
    logger = MetricsLogger(run_dir, cfg.metrics.sinks, run_name=run_dir.name, config=cfg.model_dump(mode="json"))
    history: list[dict[str, Any]] = []
    t_run = time.perf_counter()
    with step_bar(cfg.train.steps, start, f"{cfg.task} {run_dir.name}", info.is_main) as bar:
        for step in range(start, cfg.train.steps):
            t0 = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            stats = train_step(model, optimizer, plan.next_step(), device=device, dp_group=dp_group,
                               dp_size=dims.dp, fsdp=fsdp, autocast_dtype=autocast_dtype,
                               max_grad_norm=o.max_grad_norm, params=params,
                               sparse_logits=sparse_logits)
            scheduler.step()
            dt = time.perf_counter() - t0
            tps = stats["tokens"] / dt
            row = {"loss": stats["loss"], "grad_norm": stats["grad_norm"], "lr": lr, "tokens": stats["tokens"],
                   "tokens_per_s": tps, "step_s": dt, "peak_mem_gb": peak_memory_gb(device),
                   "mfu": (tps * fpt / info.world_size / (peak * 1e12)) if peak else None}
            history.append({"step": step + 1} | row)
            if (step + 1) % cfg.train.log_every == 0 or step + 1 == cfg.train.steps:
                logger.log(step + 1, **row)
            bar(loss=stats["loss"], tok_s=tps)
            last = step + 1 == cfg.train.steps
            every = cfg.checkpoint.every
            if (every and (step + 1) % every == 0) or (last and cfg.checkpoint.at_end):
                ckpt.save_train_state(ckpt_root, step + 1, model, optimizer, scheduler, plan.state_dict(),
                                      state_info, cfg.checkpoint.keep)
            if os.environ.get(KILL_ENV, "").split(":")[0] == str(step + 1):
                if os.environ[KILL_ENV].endswith(":raise"):
                    raise RuntimeError(f"{KILL_ENV}: simulated crash after step {step + 1}")
                os._exit(137)  # simulate a hard kill: no cleanup, no final save, no flush
    logger.close()

    outputs = _save_outputs(cfg, model, run_dir, model_dir)
    summary = {"run_dir": str(run_dir), "task": cfg.task, "steps": cfg.train.steps, "resumed_from": start,
               "world_size": info.world_size, "layout": dims.as_dict(), "examples": len(examples),
               "first_loss": history[0]["loss"] if history else None,
               "final_loss": history[-1]["loss"] if history else None,
               "losses": [h["loss"] for h in history],
               "tokens_per_s": sum(h["tokens"] for h in history) / max(1e-9, sum(h["step_s"] for h in history)),
               "wall_s": time.perf_counter() - t_run, "outputs": outputs}
    if keep_model:
        summary["model"] = model
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _save_outputs(cfg: AutoModelConfig, model: Any, run_dir: Path, model_dir: Path) -> dict[str, str]:
    outputs: dict[str, str] = {}
    shard_bytes = cfg.output.max_shard_mb * 1024 * 1024
    if cfg.lora.enabled:
        outputs["adapter"] = str(save_adapter(model, run_dir / "adapter"))
        if cfg.output.save_hf:
            outputs["hf"] = str(save_merged(model, run_dir / "hf", model_dir, shard_bytes))
    elif cfg.output.save_hf:
        outputs["hf"] = str(save_consolidated(model, run_dir / "hf", model_dir, shard_bytes))
    return outputs
