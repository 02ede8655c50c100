"""A policy worker group (`grpo.policy_workers` > 1): FSDP2 over gloo, each worker on 1/N of the batch.

Parity: one GRPO `train_step` with 2 FSDP2 workers (real processes, spawned or Ray actors) leaves the same
weights as with 1 worker, for token- and sequence-level normalization, with 2 mini-batches (2 optimizer steps,
global-norm clipping active). Then a GRPO run through Ray with 2 policy workers, and the config checks.
"""

from __future__ import annotations

import pytest
import torch

from anemone_core.config import load_config
from anemone_core.errors import ConfigError
from anemone_rl.grpo_config import GRPOConfig
from anemone_rl.policy import build_batch, split_for_workers

ALGO = dict(mini_batches=2, micro_batch_size=2, temperature=1.0, eps_low=0.2, eps_high=0.28, kl_beta=0.1,
            normalization="token")
# max_grad_norm small enough that clipping is active: the global norm must be the same on both sides
OPTIM = dict(lr=1e-4, weight_decay=0.0, warmup_steps=0, min_lr_ratio=1.0, max_grad_norm=0.05)


def _batch(rows: int = 8) -> dict[str, torch.Tensor]:
    """Prompts and responses of varied lengths (so micro-batches pad differently), random advantages and
    reference logprobs, near-zero generator logprobs."""
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 500, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
               for _ in range(rows)]
    responses = [torch.randint(3, 500, (int(torch.randint(1, 7, (1,), generator=g)),), generator=g).tolist()
                 for _ in range(rows)]
    batch = build_batch(prompts, responses, pad_id=2)
    batch["advantages"] = torch.randn(rows, generator=g)
    batch["gen_logprobs"] = -torch.rand(batch["response_mask"].shape, generator=g) * batch["response_mask"]
    batch["ref_logprobs"] = -6.0 - torch.rand(batch["response_mask"].shape, generator=g)
    return batch


def _worker_kwargs(tiny_dir: str, algo: dict) -> dict:
    return dict(model_path=tiny_dir, dtype="float32", optim=OPTIM, algo=algo, total_steps=4, seed=0, threads=1,
                colocated=True)


def _one_worker(tiny_dir: str, algo: dict) -> tuple[dict, dict]:
    from anemone_rl.workers import PolicyWorker

    w = PolicyWorker(**_worker_kwargs(tiny_dir, algo))
    stats = w.train_step(_batch())
    return w.state_dict(), stats


def _compare(start: dict, ref: tuple[dict, dict], sd: dict, stats: dict) -> None:
    ref_sd, ref_stats = ref
    assert sd.keys() == ref_sd.keys()
    moved = max(float((ref_sd[k] - start[k]).abs().max()) for k in ref_sd)
    assert moved > 1e-5  # the update did something, so equality below means something
    diff = max(float((sd[k] - ref_sd[k]).abs().max()) for k in ref_sd)
    assert diff < 1e-5, f"2 workers vs 1: max |diff| {diff:.2e} (the update moved weights by up to {moved:.2e})"
    for k in ("loss", "kl", "clip_fraction", "entropy", "logprob_mismatch", "logprob_mismatch_max", "grad_norm"):
        assert stats[k] == pytest.approx(ref_stats[k], rel=1e-4, abs=1e-7), k


@pytest.fixture(scope="module")
def start_sd(tiny_dir):
    from anemone_rl.policy import load_policy

    return {k: v.clone() for k, v in load_policy(tiny_dir, "float32")[0].state_dict().items()}


@pytest.mark.parametrize("normalization", ["token", "sequence"])
def test_two_fsdp2_processes_match_one_worker(tiny_dir, start_sd, normalization):
    """2 spawned processes (torch.multiprocessing + gloo, no Ray needed) vs 1 in-process worker."""
    from anemone_rl.spawn_group import run_group

    algo = ALGO | {"normalization": normalization}
    shares = split_for_workers(_batch(), 2, algo["mini_batches"])
    stats, sd, _, host = run_group(2, _worker_kwargs(tiny_dir, algo), [
        ("train_step", [(s,) for s in shares]), ("state_dict", None), ("refit_generator", None),
        ("generator_weights", None)], start_method="fork")
    _compare(start_sd, _one_worker(tiny_dir, algo), sd, stats)
    for k, v in sd.items():  # the refit put exactly the gathered weights into rank 0's generator copy
        assert torch.equal(host[k], v), k


def test_split_for_workers_gives_each_worker_a_share_of_every_mini_batch():
    batch = {"input_ids": torch.arange(8).unsqueeze(1), "attention_mask": torch.ones(8, 1)}
    shares = split_for_workers(batch, 2, mini_batches=2)
    assert [s["input_ids"].flatten().tolist() for s in shares] == [[0, 1, 4, 5], [2, 3, 6, 7]]
    with pytest.raises(ValueError, match="do not split"):
        split_for_workers(batch, 3)


def test_policy_workers_config_is_checked():
    with pytest.raises(ConfigError, match=r"policy_workers = 3 .*choose policy_workers in \[1, 2, 4, 8\]"):
        load_config(GRPOConfig, None, ["grpo.policy_workers=3", "grpo.micro_batch_size=2"])
    with pytest.raises(ConfigError, match=r"policy_workers = 2 .*micro_batch_size in \[1, 2, 4, 8\]"):
        load_config(GRPOConfig, None, ["grpo.policy_workers=2", "grpo.micro_batch_size=16"])
    with pytest.raises(ConfigError, match="ray.enabled=true"):
        load_config(GRPOConfig, None, ["grpo.policy_workers=2", "ray.enabled=false"])
    with pytest.raises(ConfigError, match="ray.device=cpu"):
        load_config(GRPOConfig, None, ["grpo.policy_workers=2", "ray.device=cuda"])
    cfg = load_config(GRPOConfig, None, ["grpo.policy_workers=2", "grpo.micro_batch_size=2", "grpo.mini_batches=2"])
    assert cfg.grpo.policy_workers == 2
