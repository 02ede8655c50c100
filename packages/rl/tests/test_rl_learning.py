"""Learning, honestly: after a short SFT warm-up, GRPO raises held-out accuracy on a toy task with a
verifiable reward by at least 20 points, and a control run with shuffled rewards does not.

Toy task: "Last digit?\\n<n>" -> the last digit of n, n in 0..999; 800 numbers train, 200 held out. The tiny
model (2 layers, hidden 64) is warmed up by SFT just long enough to answer with a digit, not to answer
well; GRPO must find the rest from its own samples, scored by the math verifier. Minutes on 2 CPU cores.
"""

import json
import random

import pytest

from anemone_core.config import load_config
from anemone_core.metrics import read_metrics
from anemone_rl.grpo_config import GRPOConfig
from anemone_rl.grpo_trainer import train as grpo
from anemone_rl.sft_config import SFTConfig
from anemone_rl.sft_trainer import train as sft

SFT_STEPS, GRPO_STEPS, GRPO_LR = 40, 60, 3e-4


def _task(folder):
    nums = list(range(1000))
    random.Random(0).shuffle(nums)

    def write(name, ns):
        rows = [{"prompt": f"Last digit?\n{n}", "answer": str(n % 10)} for n in ns]
        (folder / name).write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        return str(folder / name)

    return write("train.jsonl", nums[:800]), write("test.jsonl", nums[800:])


def _grpo(model, train, test, out, shuffle):
    return grpo(load_config(GRPOConfig, None, [
        f"model.path={model}", f"run.out={out}", "ray.enabled=false", "run.progress=false", "run.threads=1",
        f"data.train={train}", f"data.eval={test}", "data.eval_prompts=100", f"grpo.steps={GRPO_STEPS}",
        "grpo.prompts_per_step=8", "grpo.generations_per_prompt=8", "grpo.micro_batch_size=64",
        "grpo.max_new_tokens=4", f"optim.lr={GRPO_LR}", "grpo.kl_beta=0.0", f"env.shuffle_rewards={shuffle}"]))


@pytest.mark.slow
def test_grpo_beats_sft_warmup_and_shuffled_control(tiny_dir, tmp_path):
    train, test = _task(tmp_path)
    warm = sft(load_config(SFTConfig, None, [
        f"model.path={tiny_dir}", f"run.out={tmp_path / 'sft'}", f"data.train={train}", f"data.eval={test}",
        "data.eval_prompts=100", "data.eval_max_new_tokens=4", f"sft.steps={SFT_STEPS}", "sft.batch_size=16",
        "sft.micro_batch_size=16", "optim.lr=3e-3", "run.progress=false", "run.threads=1"]))
    start = warm["eval_accuracy_end"]
    learned = _grpo(warm["model"], train, test, tmp_path / "grpo", "false")
    control = _grpo(warm["model"], train, test, tmp_path / "control", "true")
    assert learned["eval_accuracy_start"] == pytest.approx(start)
    assert learned["eval_accuracy_end"] >= start + 0.20, (start, learned["eval_accuracy_end"])
    assert control["eval_accuracy_end"] < start + 0.10, (start, control["eval_accuracy_end"])
    rewards = [r["reward_mean"] for r in read_metrics(tmp_path / "grpo" / "metrics.jsonl") if "reward_mean" in r]
    third = len(rewards) // 3  # sampled rewards at temperature 1 are noisy step to step: compare thirds
    assert sum(rewards[-third:]) / third > sum(rewards[:third]) / third
