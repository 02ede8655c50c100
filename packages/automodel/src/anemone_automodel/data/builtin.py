"""The instruction set shipped with the package, generated deterministically (no file, no download).

`builtin_chats()`: 2-digit addition chats ("What is 23 + 45?" -> "23 + 45 = 68.") in a few phrasings, plus
a dozen general question/answer pairs, shuffled with a fixed seed. The embedded SmolLM2-135M answers 2-digit
sums poorly (FACTS.md), so a short LoRA run visibly lowers the loss on it.
"""

from __future__ import annotations

import random

_QUESTIONS = ("What is {a} + {b}?", "Compute {a} + {b}.", "Add {a} and {b}.", "{a} + {b} = ?")
_GENERAL = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("How many days are in a week?", "There are 7 days in a week."),
    ("How many minutes are in an hour?", "There are 60 minutes in an hour."),
    ("What color is the sky on a clear day?", "The sky is blue on a clear day."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("Name a primary color.", "Red is a primary color."),
    ("What do bees make?", "Bees make honey."),
    ("What is water made of?", "Water is made of hydrogen and oxygen."),
    ("What is the largest planet in the solar system?", "Jupiter is the largest planet in the solar system."),
    ("Say hello in Spanish.", "Hello in Spanish is \"hola\"."),
]


def builtin_chats(n: int = 512, seed: int = 1234) -> list[dict]:
    """`n` rows of {"messages": [user, assistant]}: mostly addition, every 8th a general question."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        if i % 8 == 7:
            q, a = _GENERAL[(i // 8) % len(_GENERAL)]
        else:
            x, y = rng.randint(10, 99), rng.randint(10, 99)
            q = rng.choice(_QUESTIONS).format(a=x, b=y)
            a = f"{x} + {y} = {x + y}."
        rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    rng.shuffle(rows)
    return rows


def builtin_text(n: int = 512, seed: int = 1234) -> list[dict]:
    """The same set as plain text rows {"text": "question answer"}, for the pretraining default."""
    return [{"text": f"{r['messages'][0]['content']} {r['messages'][1]['content']}"} for r in builtin_chats(n, seed)]
