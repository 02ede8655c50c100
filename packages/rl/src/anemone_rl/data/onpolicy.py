"""On-policy preference pairs from a verifier: the model's own wrong answers rejected, a right answer chosen.

For each prompt row (with `answer`), sample `samples` responses from a model, score them with a reward
function (the math verifier by default), and pair every distinct wrong response (reward 0) with a right one:
a sampled right response when there is one, else the row's reference `answer`. Questions the model always
answers right give no pair. The result is a JSONL file of `prompt`/`chosen`/`rejected` rows for `anemone rl dpo
data.train=...`.

    uv run python -m anemone_rl.data.onpolicy --model outputs/rl-sft-arithmetic/model \\
        --out outputs/onpolicy-pairs.jsonl --questions 400 --samples 8

Held-out evaluation stays separate: build pairs from the train split only (the default `--source`).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from anemone_core.errors import AnemoneError


def verifier_pairs(rows: list[dict[str, Any]], samples: list[list[str]], rewards: list[list[float]],
                   max_per_question: int, seed: int = 0) -> list[dict[str, Any]]:
    """Pairs from scored samples: row i's distinct wrong responses (at most `max_per_question`, in sampling
    order), each against a right response of the same row (a random sampled one, else `row["answer"]`)."""
    if not len(rows) == len(samples) == len(rewards):
        raise AnemoneError(f"{len(rows)} rows, {len(samples)} sample lists and {len(rewards)} reward lists: "
                           f"give one list of samples and one of rewards per row")
    rng = random.Random(seed)
    pairs = []
    for row, texts, scores in zip(rows, samples, rewards, strict=True):
        right = [t.strip() for t, r in zip(texts, scores, strict=True) if r > 0]
        wrong: list[str] = []
        for t, r in zip(texts, scores, strict=True):
            t = t.strip()
            if r <= 0 and t and t not in wrong:
                wrong.append(t)
        for w in wrong[:max_per_question]:
            chosen = rng.choice(right) if right else str(row["answer"])
            pairs.append({"prompt": row["prompt"], "chosen": chosen, "rejected": w})
    return pairs


def sample_and_score(model: Any, tokenizer: Any, rows: list[dict[str, Any]], samples: int, max_new_tokens: int,
                     temperature: float, seed: int, reward: str = "math",
                     batch_prompts: int = 16) -> tuple[list[list[str]], list[list[float]]]:
    """`samples` responses per row (sampled at `temperature`) and their rewards."""
    from anemone_rl.data.loaders import prompt_messages
    from anemone_rl.envs import build_env
    from anemone_rl.generation import SamplingParams, TorchGenerator

    gen = TorchGenerator(model, tokenizer=tokenizer)
    env = build_env(reward)
    texts: list[list[str]] = []
    scores: list[list[float]] = []
    for start in range(0, len(rows), batch_prompts):
        chunk = rows[start : start + batch_prompts]
        ids = [list(tokenizer.apply_chat_template(prompt_messages(r), add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"]) for r in chunk]
        params = SamplingParams(max_new_tokens, temperature, seed=seed + start)
        outs = gen.generate([p for p in ids for _ in range(samples)], params)
        flat_rows = [r for r in chunk for _ in range(samples)]
        flat_text = [o.text or "" for o in outs]
        flat_score = [e.reward for e in env.step(flat_rows, flat_text)]
        for i in range(len(chunk)):
            texts.append(flat_text[i * samples : (i + 1) * samples])
            scores.append(flat_score[i * samples : (i + 1) * samples])
    return texts, scores


def build(model_path: str | None, out: str, source: str = "arithmetic:train", questions: int = 400,
          samples: int = 8, max_per_question: int = 4, max_new_tokens: int = 8, temperature: float = 1.0,
          seed: int = 0, threads: int = 0) -> dict[str, Any]:
    """Sample, score, pair and write `out` (JSONL, atomically); returns counts."""
    import torch

    from anemone_core.io import atomic_write_text
    from anemone_rl.data.loaders import load_rows
    from anemone_rl.policy import load_policy

    if threads:
        torch.set_num_threads(threads)
    rows = [r for r in load_rows(source, field="--source") if "answer" in r][:questions]
    if not rows:
        raise AnemoneError(f"--source = {source!r} has no rows with an `answer` to verify against")
    model, tokenizer = load_policy(model_path, "auto", train=False)
    with torch.no_grad():
        texts, scores = sample_and_score(model, tokenizer, rows, samples, max_new_tokens, temperature, seed)
    pairs = verifier_pairs(rows, texts, scores, max_per_question, seed)
    atomic_write_text(Path(out), "".join(json.dumps(p) + "\n" for p in pairs))
    n = sum(len(s) for s in scores)
    return {"out": out, "questions": len(rows), "samples": n, "sample_accuracy": sum(r > 0 for s in scores for r in s) / n,
            "questions_all_right": sum(all(r > 0 for r in s) for s in scores),
            "questions_all_wrong": sum(not any(r > 0 for r in s) for s in scores), "pairs": len(pairs)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m anemone_rl.data.onpolicy", description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="HF model folder to sample from (default: the embedded model)")
    p.add_argument("--out", required=True, help="JSONL file of prompt/chosen/rejected rows to write")
    p.add_argument("--source", default="arithmetic:train", help="prompt rows with `answer` (default: %(default)s)")
    p.add_argument("--questions", type=int, default=400, help="the first N rows (default: %(default)s)")
    p.add_argument("--samples", type=int, default=8, help="responses sampled per question (default: %(default)s)")
    p.add_argument("--max-per-question", type=int, default=4, help="pairs per question at most (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=8, help="response cap (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    a = p.parse_args(argv)
    print(json.dumps(build(a.model, a.out, a.source, a.questions, a.samples, a.max_per_question, a.max_new_tokens,
                           a.temperature, a.seed, a.threads)))


if __name__ == "__main__":
    main()
