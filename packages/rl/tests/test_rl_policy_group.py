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


def _batch(rows: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Prompts and responses of varied lengths (so micro-batches pad differently), random advantages and
    reference logprobs, near-zero generator logprobs."""
    g = torch.Generator().manual_seed(seed)
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
    halves = split_for_workers(_batch(), 2)  # logprobs (behaviour policy): contiguous halves, rank 0's comes back
    lp0, stats, sd, _, host = run_group(2, _worker_kwargs(tiny_dir, algo), [
        ("logprobs", [(h,) for h in halves]), ("train_step", [(s,) for s in shares]), ("state_dict", None),
        ("refit_generator", None), ("generator_weights", None)], start_method="fork")
    _compare(start_sd, _one_worker(tiny_dir, algo), sd, stats)
    from anemone_rl.workers import PolicyWorker

    full = PolicyWorker(**_worker_kwargs(tiny_dir, algo)).logprobs(_batch())
    assert torch.allclose(lp0, full[: len(lp0)], atol=1e-5) and len(lp0) == 4
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


def test_group_checkpoint_resumes_exactly(tiny_dir, tmp_path):
    """Save a 2-worker group after one update (full weights + full optimizer state on rank 0), start a new
    group from the checkpoint: its next update equals the uninterrupted group's."""
    from anemone_rl.spawn_group import run_group

    s1, s2 = split_for_workers(_batch(), 2, 2), split_for_workers(_batch(seed=1), 2, 2)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    step2 = [("train_step", [(s,) for s in s2]), ("state_dict", None)]
    straight = run_group(2, _worker_kwargs(tiny_dir, ALGO), [
        ("train_step", [(s,) for s in s1]), ("save", [(str(ckpt),)] * 2), *step2], start_method="fork")[2:]
    assert (ckpt / "model" / "config.json").is_file() and (ckpt / "optimizer.pt").is_file()
    resumed = run_group(2, _worker_kwargs(str(ckpt / "model"), ALGO),
                        [("load_optimizer", [(str(ckpt),)] * 2), *step2], start_method="fork")[1:]
    for k in ("loss", "grad_norm", "kl", "lr"):
        assert resumed[0][k] == pytest.approx(straight[0][k], rel=1e-6), k
    assert max(float((resumed[1][k] - v).abs().max()) for k, v in straight[1].items()) < 1e-7
    # without the optimizer state (a fresh AdamW) the same update lands elsewhere: the state mattered
    fresh = run_group(2, _worker_kwargs(str(ckpt / "model"), ALGO), step2, start_method="fork")[1]
    assert max(float((fresh[k] - v).abs().max()) for k, v in straight[1].items()) > 1e-5


def _init_ray_or_skip():
    ray = pytest.importorskip("ray")
    from anemone_core.errors import AnemoneError
    from anemone_rl.ray_setup import init_ray

    try:
        init_ray(None, 2, attempts=1)
    except AnemoneError as exc:  # Ray 2.60's raylet dies when its agent starts slowly (ray-project/ray#65983)
        pytest.skip(f"a local Ray instance could not start on this machine now: {exc}")
    return ray


@pytest.mark.slow
def test_two_fsdp2_ray_actors_match_one_worker(tiny_dir, start_sd):
    """The same parity with the group as Ray actors (the trainer's path)."""
    from anemone_rl.ray_setup import free_port
    from anemone_rl.workers import PolicyWorker

    ray = _init_ray_or_skip()
    try:
        port, kw = free_port(), _worker_kwargs(tiny_dir, ALGO)
        actors = [ray.remote(PolicyWorker).options(num_cpus=0.5).remote(**kw, rank=r, world_size=2, master_port=port)
                  for r in range(2)]
        shares = split_for_workers(_batch(), 2, ALGO["mini_batches"])
        stats = ray.get([a.train_step.remote(s) for a, s in zip(actors, shares, strict=True)])[0]
        sd = ray.get([a.state_dict.remote() for a in actors])[0]
        _compare(start_sd, _one_worker(tiny_dir, ALGO), sd, stats)
        for a in actors:
            ray.kill(a)
    finally:
        ray.shutdown()


def _grpo_cfg(tiny_dir, out, *extra):
    return load_config(GRPOConfig, None, [
        f"model.path={tiny_dir}", f"run.out={out}", "run.progress=false", "run.threads=1",
        "grpo.prompts_per_step=2", "grpo.generations_per_prompt=4", "grpo.micro_batch_size=2",
        "grpo.max_new_tokens=6", "grpo.kl_beta=0.1", "data.eval_prompts=4", "optim.lr=1e-3",
        "env.reward=toy_digits", "grpo.steps=2", "run.checkpoint_every=1", *extra])


@pytest.mark.slow
@pytest.mark.parametrize("colocated", [True, False])
def test_grpo_with_two_policy_workers_through_ray(tiny_dir, tmp_path, colocated):
    """GRPO end to end with a 2-worker FSDP2 policy group as Ray actors, killed after step 1 and resumed from
    its checkpoint; every step's metrics equal a 1-worker in-process run of the same config."""
    from anemone_core.metrics import read_metrics
    from anemone_rl.grpo_trainer import train

    mode = f"ray.colocated={str(colocated).lower()}"
    train(_grpo_cfg(tiny_dir, tmp_path / "one", "ray.enabled=false", mode))
    ray = _init_ray_or_skip()
    try:
        cfg = _grpo_cfg(tiny_dir, tmp_path / "two", "ray.enabled=true", "grpo.policy_workers=2", mode)
        assert train(cfg, stop_after=1)["stopped_at"] == 1
        s = train(cfg)
        assert s["start_step"] == 1 and (tmp_path / "two" / "model" / "config.json").is_file()
    finally:
        ray.shutdown()
    one = read_metrics(tmp_path / "one" / "metrics.jsonl")
    two = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [0, 1, 2, 2]
    assert two[2]["refit_time_s"] > 0 and two[2]["kl"] > 0
    for ra, rb in zip(one, two, strict=True):
        for k in ("eval_accuracy", "reward_mean", "loss", "kl", "entropy", "grad_norm", "logprob_mismatch"):
            if k in ra:
                assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-6), (ra["step"], k)


def test_workers_send_each_policy_worker_its_share_and_stitch_logprobs():
    from anemone_rl.ray_setup import Workers

    class Fake:
        def __init__(self, rank):
            self.rank, self.seen = rank, None

        def train_step(self, batch):
            self.seen = batch["input_ids"].flatten().tolist()
            return {"rank": self.rank}

        def logprobs(self, batch):
            return batch["input_ids"].float() + 0.5

    fakes = [Fake(0), Fake(1)]
    w = Workers(fakes[0], fakes[0], None, None, True, use_ray=False, policies=fakes, mini_batches=2)
    batch = {"input_ids": torch.arange(8).unsqueeze(1), "attention_mask": torch.ones(8, 1)}
    assert w.train_step(batch) == {"rank": 0}  # rank 0's answer (the group's metrics)
    assert [f.seen for f in fakes] == [[0, 1, 4, 5], [2, 3, 6, 7]]
    assert w.policy_logprobs(batch).flatten().tolist() == [i + 0.5 for i in range(8)]


def test_ray_auto_does_not_fall_back_to_in_process_with_a_group(monkeypatch, tiny_dir):
    """ray.enabled=auto runs one worker in-process when Ray fails to start, but a group cannot: it says why."""
    from anemone_core.errors import AnemoneError
    from anemone_rl import ray_setup

    def fail(*args, **kwargs):
        raise AnemoneError("a local Ray instance failed to start")

    monkeypatch.setattr(ray_setup, "init_ray", fail)
    cfg = load_config(GRPOConfig, None, [f"model.path={tiny_dir}", "grpo.policy_workers=2", "grpo.micro_batch_size=2"])
    with pytest.raises(AnemoneError, match="cannot fall back to in-process workers.*grpo.policy_workers=1"):
        ray_setup.start_workers(cfg)
