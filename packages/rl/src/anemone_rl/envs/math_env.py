"""Math answers: take the `\\boxed{}` content if there is one, else the last number; compare as numbers."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, with nested braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def _to_number(text: str) -> Fraction | None:
    text = text.strip().replace(",", "").rstrip(".")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def extract_answer(text: str) -> str | None:
    """The answer a response commits to: \\boxed{} content, else the last number in the text, else None."""
    boxed = _boxed(text)
    if boxed is not None:
        nums = _NUMBER.findall(boxed)
        return nums[-1] if nums else boxed.strip()
    nums = _NUMBER.findall(text)
    return nums[-1] if nums else None


def is_correct(response: str, answer: str | int | float) -> bool:
    got = extract_answer(response)
    if got is None:
        return False
    a, b = _to_number(got), _to_number(str(answer))
    if a is not None and b is not None:
        return a == b
    return got.strip() == str(answer).strip()


def math_reward(sample: dict[str, Any], response: str) -> float:
    """1.0 if the response's final answer equals `sample["answer"]`, else 0.0."""
    if "answer" not in sample:
        raise KeyError("the math environment needs an 'answer' field in every prompt row")
    return 1.0 if is_correct(response, sample["answer"]) else 0.0
