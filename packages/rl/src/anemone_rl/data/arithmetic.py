"""The shipped arithmetic task: generated sums and differences, train and held-out splits (disjoint).

Rows: {"prompt": [chat messages], "answer": "68", "question": "23 + 45"}. The same rows give SFT
conversations (`sft_messages`) and DPO preference pairs (`preference_pair`, a wrong answer near the right one).
The JSONL files under `arithmetic/` are exactly `arithmetic_rows(split)`; a test checks it.
"""

from __future__ import annotations

import json
import random
from functools import cache
from importlib.resources import files
from typing import Any

INSTRUCTION = "Answer with just the number."
SPLITS = {"train": 2000, "test": 200}
_SEED = 1234


def _question(a: int, b: int, op: str) -> tuple[str, int]:
    return f"{a} {op} {b}", a + b if op == "+" else a - b


@cache
def _all_questions(max_operand: int = 99) -> list[tuple[str, int]]:
    rng = random.Random(_SEED)
    pairs = [(a, b, op) for a in range(max_operand + 1) for b in range(max_operand + 1) for op in "+-"]
    rng.shuffle(pairs)
    return [_question(a, b, op) for a, b, op in pairs]


def arithmetic_rows(split: str = "train") -> list[dict[str, Any]]:
    """Deterministic rows of a split: the held-out split never shares a question with train."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: choose one of {sorted(SPLITS)}")
    qs = _all_questions()
    chosen = qs[: SPLITS["test"]] if split == "test" else qs[SPLITS["test"] : SPLITS["test"] + SPLITS["train"]]
    return [{"prompt": [{"role": "user", "content": f"What is {q}? {INSTRUCTION}"}], "answer": str(ans),
             "question": q} for q, ans in chosen]


def load_arithmetic(split: str = "train") -> list[dict[str, Any]]:
    """The shipped JSONL file of a split."""
    text = files("anemone_rl.data").joinpath("arithmetic", f"{split}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def sft_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """The conversation that answers a row correctly (for an SFT warm-up)."""
    return [*row["prompt"], {"role": "assistant", "content": row["answer"]}]


OFFSETS = (-10, -2, -1, 1, 2, 10)
"""How far a rejected answer is from the right one: a wrong last digit (+-1, +-2) or tens digit (+-10)."""


def preference_pair(row: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A DPO pair: the right answer is chosen, a nearby wrong one rejected."""
    ans = int(row["answer"])
    wrong = ans + rng.choice(OFFSETS)
    return {"prompt": row["prompt"], "chosen": str(ans), "rejected": str(wrong)}


def preference_pairs(row: dict[str, Any], rng: random.Random, per_question: int = 1) -> list[dict[str, Any]]:
    """`per_question` pairs for one row, each with a different nearby wrong answer (distinct offsets); 1 gives
    exactly `preference_pair`'s pair (the same draw from `rng`)."""
    if not 1 <= per_question <= len(OFFSETS):
        raise ValueError(f"per_question = {per_question}: choose 1..{len(OFFSETS)} (one pair per offset in {OFFSETS})")
    if per_question == 1:
        return [preference_pair(row, rng)]
    ans = int(row["answer"])
    return [{"prompt": row["prompt"], "chosen": str(ans), "rejected": str(ans + d)}
            for d in rng.sample(OFFSETS, per_question)]


def write_files(folder) -> None:
    """Regenerate the shipped JSONL files (run once by the maintainers)."""
    from pathlib import Path

    for split in SPLITS:
        lines = [json.dumps(r) for r in arithmetic_rows(split)]
        (Path(folder) / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
