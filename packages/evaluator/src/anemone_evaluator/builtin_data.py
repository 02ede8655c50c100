"""Generators for the built-in tasks' data files (shipped under `builtin/`; rerun `python -m
anemone_evaluator.builtin_data` to rebuild them byte for byte).

- `arith_*`: two-digit addition and subtraction questions, generated from a fixed seed. A synthetic sanity
  task, not a published benchmark: it tells whether a model can be scored at all and whether training moved it.
- `stdlib_docs`: English prose taken from the module docstrings of CPython's standard library (PSF
  license), present on every machine with Python. A small perplexity set, not a standard corpus.
"""

from __future__ import annotations

import importlib
import json
import random
import re
from pathlib import Path

BUILTIN_DIR = Path(__file__).parent / "builtin"
SEED = 1234
N_ARITH = 200
STDLIB_MODULES = [
    "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "cmd", "codecs", "collections", "concurrent.futures",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "doctest", "email",
    "enum", "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "heapq", "hmac",
    "imaplib", "inspect", "ipaddress", "json", "locale", "logging", "mailbox", "optparse", "pickle", "pickletools",
    "pdb", "pprint", "pydoc", "queue", "quopri", "random", "re", "sched", "secrets", "selectors", "shelve", "shlex",
    "shutil", "smtplib", "socketserver", "sqlite3", "statistics", "string", "subprocess", "tarfile", "tempfile",
    "textwrap", "threading", "timeit", "tokenize", "trace", "turtle", "typing", "unittest", "uuid", "warnings",
    "wave", "weakref", "xml.dom.minidom", "zipfile", "zipimport",
]


def arithmetic_rows(n: int = N_ARITH, seed: int = SEED) -> list[dict]:
    """`{"a", "op", "b", "answer", "choices", "label"}` rows; `choices` holds 4 distinct integers as strings."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        op = rng.choice(["+", "-"])
        answer = a + b if op == "+" else a - b
        wrong: set[int] = set()
        for delta in rng.sample([-11, -10, -9, -2, -1, 1, 2, 9, 10, 11], 10):
            if len(wrong) == 3:
                break
            wrong.add(answer + delta)
        choices = [answer, *sorted(wrong)]
        rng.shuffle(choices)
        rows.append({"id": i, "a": a, "op": op, "b": b, "answer": str(answer),
                     "choices": [str(c) for c in choices], "label": choices.index(answer)})
    return rows


def stdlib_doc_rows(min_chars: int = 200, max_chars: int = 1500) -> list[dict]:
    """`{"id", "module", "text"}`: each module docstring, whitespace-normalized, cut at a sentence end."""
    rows: list[dict] = []
    for name in STDLIB_MODULES:
        try:
            doc = importlib.import_module(name).__doc__ or ""
        except Exception:  # e.g. turtle without tkinter: skip, the set is what imports here
            continue
        paras = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", doc)]
        # Prose paragraphs only: skip code samples, tables and option lists.
        prose = [p for p in paras if p and not re.search(r">>>|^\s*[-*=]|\t|  ", p) and p[-1] == "."]
        text = " ".join(prose)
        if len(text) > max_chars:
            text = text[:max_chars].rsplit(". ", 1)[0] + "."
        if len(text) >= min_chars:
            rows.append({"id": len(rows), "module": name, "text": text})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    BUILTIN_DIR.mkdir(exist_ok=True)
    write_jsonl(BUILTIN_DIR / "arithmetic.jsonl", arithmetic_rows())
    write_jsonl(BUILTIN_DIR / "stdlib_docs.jsonl", stdlib_doc_rows())


if __name__ == "__main__":
    main()
