"""The Ray workers of GRPO: policy (trainer, and generator when colocated), generator, reference, environment.

Each class is plain Python, so tests and single-process tools can use it directly; `start_workers` wraps
them with `ray.remote`. Batches travel as dicts of CPU tensors through Ray's object store.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from anemone_rl.algorithms import clipped_policy_loss, masked_mean
from anemone_rl.config import OptimConfig
from anemone_rl.generation import Completion, SamplingParams
from anemone_rl.local_state import LocalState
from anemone_rl.policy import batched_logprobs, forward_logprobs, load_policy, micro_batches


def _setup(threads: int, seed: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _generator(model: Any, tokenizer: Any, backend: str = "torch", model_path: str | None = None, **kw: Any):
    if backend == "vllm":
        from anemone_rl.generation.vllm_backend import VLLMGenerator

        return VLLMGenerator(model_path, tokenizer, **kw)
    from anemone_rl.generation import TorchGenerator

    return TorchGenerator(model, tokenizer=tokenizer, **kw)


class PolicyWorker:
    """Holds the trained model and its optimizer; in colocated mode it also generates with the same weights.

    One of `world_size` ranks of a policy worker group: with world_size > 1 the ranks form a gloo process group
    (`master_port` on 127.0.0.1, chosen by the driver) and shard the model with FSDP2 (`fsdp_policy`); each
    gets 1/world_size of every mini-batch. Rank 0 then generates (colocated mode) on an unsharded copy that a
    refit fills with the gathered weights.
    """

    def __init__(self, model_path: str | None, dtype: str, optim: dict[str, Any], algo: dict[str, Any],
                 total_steps: int, seed: int = 0, threads: int = 0, device: str = "cpu", colocated: bool = True,
                 rank: int = 0, world_size: int = 1, master_port: int = 0) -> None:
        _setup(threads, seed)
        self.model, self.tokenizer = load_policy(model_path, dtype, device)
        self.device = device
        self.algo = algo
        self.rank, self.world = rank, world_size
        optim_cfg, steps = OptimConfig(**optim), total_steps * algo["mini_batches"]
        gen_model = self.model
        if world_size > 1:
            from anemone_rl.fsdp_policy import ShardedState, init_group

            self.state: LocalState = ShardedState(self.model, self.tokenizer, optim_cfg, steps,
                                                  init_group(rank, world_size, master_port))
            gen_model = self.state.host  # None on ranks > 0
        else:
            self.state = LocalState(self.model, self.tokenizer, optim_cfg, steps)
        matmul = algo.get("gen_matmul_dtype", "float32")
        self.gen = (_generator(gen_model, self.tokenizer, matmul_dtype=matmul)
                    if colocated and gen_model is not None else None)

    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        assert self.gen is not None, "generate() on the policy worker needs colocated mode"
        return self.gen.generate(prompts, params)

    def refit_generator(self) -> float:
        """Colocated refit: the generator shares the module; only its fused copies are rebuilt. In a group
        (collective) the full weights are first gathered into rank 0's unsharded copy."""
        t0 = time.perf_counter()
        if self.world > 1:
            self.state.sync_host()  # type: ignore[attr-defined]
        if self.gen is not None:
            self.gen.refresh()
        return time.perf_counter() - t0

    def generator_weights(self) -> dict[str, torch.Tensor] | None:
        """The weights the colocated generator samples with (None without one: separate mode, ranks > 0)."""
        from anemone_rl.fsdp_policy import unique_state_dict

        return unique_state_dict(self.gen.model) if self.gen is not None else None

    def logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batched_logprobs(self.model, _to(batch, self.device), self.algo["micro_batch_size"],
                                self.algo["temperature"], self.algo.get("share_prompt_forward", False)).cpu()

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One GRPO update: `mini_batches` optimizer steps, gradients accumulated over micro-batches.

        batch: input_ids/attention_mask (N, L); response_mask, gen_logprobs, [ref_logprobs], [old_logprobs]
        (N, L-1); advantages (N,). Without old_logprobs the update is on-policy: old = current, detached.
        In a group, `batch` is this rank's share (1/world_size of every mini-batch, `split_for_workers`); the
        loss is still normalized by the whole mini-batch's token / sequence count and the metrics returned are
        the group's.
        """
        a = self.algo
        self.model.train()
        N = batch["input_ids"].shape[0]
        per_mini = N // a["mini_batches"]
        sums = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "entropy": 0.0, "mismatch": 0.0, "tokens": 0.0}
        mismatch_max, grad_norm = 0.0, 0.0
        for m in range(a["mini_batches"]):
            mini = {k: v[m * per_mini : (m + 1) * per_mini] for k, v in batch.items()}
            n_tok = float(mini["response_mask"].sum())
            if self.world > 1:
                from anemone_rl.fsdp_policy import all_reduce

                n_tok = all_reduce([n_tok])[0]  # the whole mini-batch's response tokens
            mbs = list(micro_batches(_to(mini, self.device), a["micro_batch_size"]))
            for i, mb in enumerate(mbs):
                if self.world > 1:  # FSDP2: reduce-scatter the accumulated gradients once, after the last one
                    self.model.set_requires_gradient_sync(i == len(mbs) - 1)
                mask = mb["response_mask"]
                lp, ent = forward_logprobs(self.model, mb["input_ids"], mb["attention_mask"], a["temperature"],
                                           with_entropy=True, response_mask=mask,
                                           share_prompts=a.get("share_prompt_forward", False))  # (b, W-1)
                old = mb["old_logprobs"] if "old_logprobs" in mb else lp.detach()
                loss, st = clipped_policy_loss(
                    lp, old, mb["advantages"], mask, a["eps_low"], a["eps_high"], a["normalization"],
                    mb.get("ref_logprobs"), a["kl_beta"], num_tokens=max(n_tok, 1.0),
                    num_sequences=float(per_mini * self.world))
                # FSDP2 averages gradients over the ranks; the loss is already a share of the global sum.
                (loss * self.world if self.world > 1 else loss).backward()
                t = float(mask.sum())
                diff = (lp.detach() - mb["gen_logprobs"]).abs() * mask  # generator vs trainer logprobs
                sums["loss"] += float(loss.detach())
                sums["kl"] += float(st.get("kl", torch.tensor(0.0))) * t
                sums["clip_fraction"] += float(st["clip_fraction"]) * t
                sums["entropy"] += float(masked_mean(ent, mask)) * t
                sums["mismatch"] += float(diff.sum())
                mismatch_max = max(mismatch_max, float(diff.max()))
                sums["tokens"] += t
            grad_norm = self.state.step()
        if self.world > 1:  # the group's metrics: sums over ranks, the largest mismatch
            from anemone_rl.fsdp_policy import all_reduce

            sums = dict(zip(sums, all_reduce(list(sums.values())), strict=True))
            mismatch_max = all_reduce([mismatch_max], "max")[0]
        tokens = max(sums["tokens"], 1.0)
        return {"loss": sums["loss"] / a["mini_batches"], "kl": sums["kl"] / tokens,
                "clip_fraction": sums["clip_fraction"] / tokens, "entropy": sums["entropy"] / tokens,
                "logprob_mismatch": sums["mismatch"] / tokens, "logprob_mismatch_max": mismatch_max,
                "grad_norm": grad_norm, "lr": self.state.lr()}

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        """The weights for a separate generator (tied duplicates dropped). In a group this is a collective
        and only rank 0 returns them (None elsewhere)."""
        from anemone_rl.fsdp_policy import unique_state_dict

        if self.world > 1:
            return self.state.full_state_dict()  # type: ignore[attr-defined]
        return unique_state_dict(self.model)

    def save_hf(self, folder: str) -> None:
        """The policy as a Hugging Face folder (weights + config + tokenizer)."""
        self.state.save_hf(Path(folder))

    def save(self, folder: str) -> None:
        """Resumable state into `folder` (already created): model/ (HF folder) + optimizer.pt."""
        self.state.save(Path(folder))

    def load_optimizer(self, folder: str) -> None:
        self.state.load_optimizer(Path(folder))


class ReferenceWorker:
    """The frozen starting policy, for the KL term."""

    def __init__(self, model_path: str | None, dtype: str, micro_batch_size: int, temperature: float,
                 threads: int = 0, device: str = "cpu", share_prompts: bool = False) -> None:
        _setup(threads, 0)
        self.model, _ = load_policy(model_path, dtype, device, train=False)
        self.device, self.mbs, self.temperature = device, micro_batch_size, temperature
        self.share_prompts = share_prompts

    def logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batched_logprobs(self.model, _to(batch, self.device), self.mbs, self.temperature,
                                self.share_prompts).cpu()


class GeneratorWorker:
    """A separate generator (separate mode): receives the policy's weights after every update."""

    def __init__(self, model_path: str | None, dtype: str, backend: str = "torch", threads: int = 0,
                 device: str = "cpu", seed: int = 0, matmul_dtype: str = "float32") -> None:
        _setup(threads, seed)
        model, tok = (None, None)
        if backend == "torch":
            model, tok = load_policy(model_path, dtype, device, train=False)
        else:
            from anemone_automodel.model import load_tokenizer

            tok = load_tokenizer(model_path)
        self.gen = _generator(model, tok, backend, model_path,
                              **({"matmul_dtype": matmul_dtype} if backend == "torch" else {}))

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        return self.gen.generate(prompts, params)

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> float:
        t0 = time.perf_counter()
        self.gen.load_weights(state_dict)
        return time.perf_counter() - t0


class EnvWorker:
    """Scores responses with the configured reward function (timeouts and errors counted, never raised)."""

    def __init__(self, reward: str, timeout_s: float) -> None:
        from anemone_rl.envs import build_env

        self.env = build_env(reward, timeout_s)

    def step(self, rows: list[dict[str, Any]], responses: list[str]) -> tuple[list[float], dict[str, int]]:
        results = self.env.step(rows, responses)
        return [r.reward for r in results], dict(getattr(self.env, "counts", {}))


def _to(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return batch if device == "cpu" else {k: v.to(device) for k, v in batch.items()}
