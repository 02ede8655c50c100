"""Text normalization for ASR targets and hypotheses: lower case, digits to words, punctuation removed."""

from __future__ import annotations

import re
import unicodedata

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
        "sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """0 <= n < 10**9 spelt out in English words ("one hundred twenty three")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return f"{number_to_words(head)} {name}" + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")


def normalize_text(text: str) -> str:
    """The one normalizer used for training targets and scoring: 'Hello, World 42!' -> 'hello world forty two'.

    Accents are stripped (NFKD), digits become words, apostrophes inside words are kept, every other
    character outside a-z becomes a space, and runs of spaces collapse.
    """
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"\d+", lambda m: f" {number_to_words(int(m.group()))} " if len(m.group()) < 10 else " ", text)
    text = re.sub(r"(?<=[a-z])'(?=[a-z])", "\x00", text)  # protect in-word apostrophes (don't, it's)
    text = re.sub(r"[^a-z\x00]+", " ", text).replace("\x00", "'")
    return " ".join(text.split())
