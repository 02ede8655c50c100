"""Per-sample scores and their aggregation (value, stderr, bootstrap CI), with lm-eval's definitions.

acc: argmax of the choices' loglikelihoods is gold; acc_norm: the same after dividing each by the choice's
length in characters; exact_match: filtered response == target (optionally ignoring case/punctuation);
numeric_match: both parse as the same number; word_perplexity / byte_perplexity / bits_per_byte: corpus-level
exp(-sum ll / sum words|bytes) and -sum ll / sum bytes / ln 2, with bootstrap stderr over documents.
"""

from __future__ import annotations

import math
import re
import string
from typing import Any

import numpy as np

from anemone_core.errors import AnemoneError
from anemone_evaluator.stats import bootstrap_ci, mean_stderr

MC_METRICS = {"acc", "acc_norm", "exact_match"}
GEN_METRICS = {"exact_match", "numeric_match"}
ROLLING_METRICS = {"word_perplexity", "byte_perplexity", "bits_per_byte"}
LOWER_IS_BETTER = {"word_perplexity", "byte_perplexity", "bits_per_byte"}
_PUNCT = str.maketrans("", "", string.punctuation)


def check_metrics(task_name: str, output_type: str, metrics: list[str]) -> None:
    allowed = {"multiple_choice": MC_METRICS, "generate_until": GEN_METRICS,
               "loglikelihood_rolling": ROLLING_METRICS}[output_type]
    bad = [m for m in metrics if m not in allowed]
    if bad:
        raise AnemoneError(f"task '{task_name}' ({output_type}) asks for metric(s) {bad}: supported here are "
                           f"{sorted(allowed)}; fix metric_list")


def score_multiple_choice(lls: list[float], greedy: list[bool], choices: list[str], gold: int,
                          metrics: list[str]) -> dict[str, float]:
    lls_arr = np.array(lls)
    lens = np.array([float(len(c)) for c in choices])
    out = {"acc": float(np.argmax(lls_arr) == gold), "acc_norm": float(np.argmax(lls_arr / lens) == gold),
           "exact_match": float(greedy[gold])}
    return {m: out[m] for m in metrics}


def _as_number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").strip())
    except ValueError:
        return None


def exact_match(pred: str, gold: str, ignore_case: bool = False, ignore_punctuation: bool = False) -> float:
    if ignore_case:
        pred, gold = pred.lower(), gold.lower()
    if ignore_punctuation:
        pred, gold = pred.translate(_PUNCT), gold.translate(_PUNCT)
    return float(pred == gold)


def numeric_match(pred: str, gold: str, rel_tol: float = 1e-6) -> float:
    a, b = _as_number(pred), _as_number(gold)
    return float(a is not None and b is not None and math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9))


def score_generation(extracted: str, gold: Any, metric: str, options: dict[str, Any]) -> float:
    golds = [str(g) for g in gold] if isinstance(gold, list) else [str(gold)]
    if metric == "exact_match":
        return max(exact_match(extracted, g, options.get("ignore_case", False),
                               options.get("ignore_punctuation", False)) for g in golds)
    return max(numeric_match(extracted, g) for g in golds)


def count_words(text: str) -> int:
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _rolling_stat(metric: str):
    def stat(ll: np.ndarray, words: np.ndarray, nbytes: np.ndarray) -> float:
        if metric == "word_perplexity":
            return math.exp(-ll.sum() / words.sum())
        if metric == "byte_perplexity":
            return math.exp(-ll.sum() / nbytes.sum())
        return float(-ll.sum() / nbytes.sum() / math.log(2))

    return stat


def aggregate(metric: str, per_sample: list[Any], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """{value, stderr, ci: [lo, hi], n, higher_is_better} for one metric over a task's samples."""
    n = len(per_sample)
    if metric in ROLLING_METRICS:
        ll, words, nbytes = (np.array(col, dtype=float) for col in zip(*per_sample, strict=True))
        stat = _rolling_stat(metric)
        value = stat(ll, words, nbytes)
        lo, hi = bootstrap_ci(stat, (ll, words, nbytes), n_boot=n_boot, seed=seed)
        rng = np.random.default_rng(seed + 1)
        boots = [stat(ll[i], words[i], nbytes[i]) for i in rng.integers(0, n, size=(200, n))] if n > 1 else [value]
        stderr, method = float(np.std(boots, ddof=1)) if n > 1 else 0.0, "bootstrap"
    else:
        arr = np.array(per_sample, dtype=float)
        value, stderr, method = float(arr.mean()), mean_stderr(arr), "analytic"
        lo, hi = bootstrap_ci(np.mean, (arr,), n_boot=n_boot, seed=seed)
    return {"value": value, "stderr": stderr, "stderr_method": method, "ci95": [lo, hi], "n": n,
            "higher_is_better": metric not in LOWER_IS_BETTER}
