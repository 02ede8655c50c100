"""Honest statistics: standard errors, bootstrap confidence intervals, paired tests between two runs."""

from __future__ import annotations

import math

import numpy as np


def mean_stderr(values: np.ndarray) -> float:
    """Standard error of the mean (sample std, ddof=1), as lm-eval reports it; 0 for n < 2."""
    n = len(values)
    return float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else 0.0


def bootstrap_ci(stat, arrays: tuple[np.ndarray, ...], n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of `stat(*arrays)`, resampling documents (rows) with replacement."""
    n = len(arrays[0])
    if n < 2:
        v = float(stat(*arrays))
        return v, v
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = np.array([stat(*(a[i] for a in arrays)) for i in idx])
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> tuple[float, int, int]:
    """Exact (binomial) McNemar test on paired 0/1 scores: (two-sided p, #a-right-b-wrong, #a-wrong-b-right)."""
    a, b = a.astype(bool), b.astype(bool)
    n10, n01 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = n10 + n01
    if n == 0:
        return 1.0, n10, n01
    k = min(n10, n01)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail), n10, n01


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean(b - a), two-sided p that the difference is 0, via the bootstrap of the paired differences)."""
    d = b.astype(float) - a.astype(float)
    n = len(d)
    if n < 2 or np.all(d == d[0]):
        return float(d.mean()) if n else 0.0, (1.0 if not n or d[0] == 0 else 0.0), 0.0
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    p = 2 * min(np.mean(boots <= 0), np.mean(boots >= 0))
    return float(d.mean()), float(min(1.0, p)), float(np.std(boots))
