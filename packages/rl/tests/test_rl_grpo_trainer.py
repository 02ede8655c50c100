"""GRPO end to end on a tiny model: in-process workers (fast) and one step through real Ray actors."""

import json

import pytest

from anemone_core.config import load_config
from anemone_core.errors import ConfigError
from anemone_core.metrics import read_metrics
from anemone_rl.grpo_config import GRPOConfig
from anemone_rl.grpo_trainer import train

KEYS = ("reward_mean", "reward_std", "accuracy", "kl", "entropy", "clip_fraction", "response_length",
        "logprob_mismatch", "gen_time_s", "train_time_s", "refit_time_s", "gen_tokens_per_s", "equal_reward_groups")


def _cfg(tiny_dir, out, *extra):
    return load_config(GRPOConfig, None, [
        f"model.path={tiny_dir}", f"run.out={out}", "run.progress=false", "ray.enabled=false",
        "grpo.prompts_per_step=2", "grpo.generations_per_prompt=4", "grpo.micro_batch_size=4",
        "grpo.max_new_tokens=6", "data.eval_prompts=4", "optim.lr=1e-3", "env.reward=toy_digits", *extra])


def test_grpo_in_process_logs_every_metric(tiny_dir, tmp_path):
    s = train(_cfg(tiny_dir, tmp_path / "r", "grpo.steps=2", "grpo.kl_beta=0.1"))
    rows = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 2]
    for k in KEYS:
        assert k in rows[1], k
    assert rows[1]["kl"] == pytest.approx(0.0, abs=1e-6)  # step 1: policy == reference
    assert rows[2]["kl"] > 0  # after an update with lr 1e-3 the policy has moved
    assert rows[1]["logprob_mismatch"] < 1e-4  # generator and trainer agree
    assert s["model"].endswith("model") and (tmp_path / "r" / "model" / "config.json").is_file()


def test_grpo_resume_after_kill_matches_uninterrupted(tiny_dir, tmp_path):
    extra = ("grpo.steps=3", "run.checkpoint_every=1", "data.eval=null", "grpo.temperature=2.0")
    train(_cfg(tiny_dir, tmp_path / "full", *extra))
    cut = _cfg(tiny_dir, tmp_path / "cut", *extra)
    assert train(cut, stop_after=2)["stopped_at"] == 2
    assert train(cut)["start_step"] == 2
    a = read_metrics(tmp_path / "full" / "metrics.jsonl")
    b = read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b, strict=True):
        for k in ("reward_mean", "loss", "kl", "entropy", "grad_norm", "response_length"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7), (ra["step"], k)


def test_raising_reward_counts_zeros_and_finishes(tiny_dir, tmp_path):
    rows = tmp_path / "p.jsonl"  # no `answer` field: the math reward raises KeyError on every response
    rows.write_text("\n".join(json.dumps({"prompt": f"say {i}"}) for i in range(4)) + "\n")
    s = train(_cfg(tiny_dir, tmp_path / "e", "grpo.steps=1", f"data.train={rows}", "data.eval=null", "env.reward=math",
                   "grpo.filter_equal_groups=true"))
    assert s["last"]["reward_errors"] == 8 and s["last"]["reward_mean"] == 0.0
    assert s["last"]["skipped"] == 1  # every group has equal (zero) rewards: nothing to learn, said so


def test_bad_batch_arithmetic_is_refused_before_work():
    with pytest.raises(ConfigError, match="generations_per_prompt = 1"):
        load_config(GRPOConfig, None, ["grpo.generations_per_prompt=1"])
    with pytest.raises(ConfigError, match="do not split into mini_batches = 3"):
        load_config(GRPOConfig, None, ["grpo.mini_batches=3"])
    with pytest.raises(ConfigError, match="micro_batch_size = 3"):
        load_config(GRPOConfig, None, ["grpo.micro_batch_size=3"])
    with pytest.raises(ConfigError, match="ray.colocated=false"):
        load_config(GRPOConfig, None, ["ray.generator=vllm"])


def test_grpo_step_through_ray_actors_separate_mode(tiny_dir, tmp_path):
    """Ray for real: a local instance, policy / generator / reference / env actors, weight refit by object store."""
    ray = pytest.importorskip("ray")
    from anemone_core.errors import AnemoneError
    from anemone_rl.ray_setup import init_ray

    try:
        init_ray(None, 2, attempts=1)
    except AnemoneError as exc:  # Ray 2.60's raylet dies when its agent starts slowly (ray-project/ray#65983)
        pytest.skip(f"a local Ray instance could not start on this machine now: {exc}")
    try:
        s = train(_cfg(tiny_dir, tmp_path / "ray", "ray.enabled=true", "ray.colocated=false", "grpo.steps=2",
                       "grpo.kl_beta=0.1", "run.threads=1", "grpo.micro_batch_size=2"))
        rows = read_metrics(tmp_path / "ray" / "metrics.jsonl")
        assert rows[2]["refit_time_s"] > 0 and rows[2]["kl"] > 0
        # after refit the separate generator samples with the updated policy: their logprobs agree
        assert rows[2]["logprob_mismatch"] < 1e-3
        assert s["eval_accuracy_end"] >= 0.0
    finally:
        ray.shutdown()
