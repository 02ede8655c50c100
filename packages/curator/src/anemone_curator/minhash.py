"""MinHash signatures and LSH band keys, vectorized with numpy; the S-curve that the bands x rows choice gives.

Pipeline per document: lowercase words (regex `\\w+`) -> stable 64-bit word hashes (blake2b, cached) ->
word n-gram shingle hashes (a linear combination of the n word hashes, then a 64-bit mixer) ->
`num_perm = bands * rows` hash functions h_i(x) = high 32 bits of (a_i * x + b_i) mod 2^64 (multiply-shift)
-> the minimum per function is the signature. Two documents share band j (its `rows` values) with probability
J^rows, so at least one of `bands` bands with probability P(J) = 1 - (1 - J^rows)^bands (the S-curve).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

WORD_RE = re.compile(r"\w+")
MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_WORD_CACHE_MAX = 2_000_000  # bounded: a huge vocabulary clears the cache instead of growing without end


class _WordCache(dict):
    def __missing__(self, word: str) -> int:
        h = self[word] = int.from_bytes(
            hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little"
        )
        return h


_WORD_CACHE = _WordCache()


def word_hashes(text: str) -> np.ndarray:
    """(n_words,) uint64 stable hashes of the lowercased words of `text`."""
    words = WORD_RE.findall(text.lower())
    if len(_WORD_CACHE) > _WORD_CACHE_MAX:
        _WORD_CACHE.clear()
    return np.fromiter(map(_WORD_CACHE.__getitem__, words), dtype=np.uint64, count=len(words))


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads the bits of a linear combination into a uniform 64-bit hash."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


_NGRAM_COEF = _mix64(np.arange(1, 33, dtype=np.uint64)) | np.uint64(1)  # odd multipliers, one per position


def shingle_hashes(text: str, ngram: int = 5) -> np.ndarray:
    """(n_shingles,) uint64 hashes of the word n-grams of `text` (one shingle if it has fewer words)."""
    w = word_hashes(text)
    m = len(w)
    if m == 0:
        return np.zeros(1, dtype=np.uint64)
    if m <= ngram:
        return _mix64(np.array([np.bitwise_xor.reduce(w * _NGRAM_COEF[:m])], dtype=np.uint64))
    count = m - ngram + 1
    acc = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(ngram):
            acc += w[k : k + count] * _NGRAM_COEF[k]
    return _mix64(acc)


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), each (num_perm,) uint64, a odd: the multiply-shift hash family."""
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.integers(0, 2**64 - 1, size=num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
    b = rng.integers(0, 2**64 - 1, size=num_perm, dtype=np.uint64, endpoint=True)
    return a, b


def signatures(
    texts: list[str], num_perm: int, ngram: int = 5, seed: int = 1, chunk_elems: int = 1 << 20
) -> np.ndarray:
    """(N, num_perm) uint32 MinHash signatures; work memory stays near 3 x 8 x chunk_elems bytes."""
    a, b = permutations(num_perm, seed)
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    start = 0
    pending: list[np.ndarray] = []
    total = 0

    def flush(stop: int) -> None:
        block = np.concatenate(pending)  # (S,) shingles of documents start..stop-1
        offsets = np.cumsum([0] + [len(s) for s in pending[:-1]])
        with np.errstate(over="ignore"):
            hashed = block[:, None] * a[None, :]  # (S, P) uint64, wrapping
            hashed += b[None, :]
            hashed >>= np.uint64(32)
        out[start:stop] = np.minimum.reduceat(hashed, offsets, axis=0)

    for i, text in enumerate(texts):
        sh = shingle_hashes(text, ngram)
        if pending and (total + len(sh)) * num_perm > chunk_elems:
            flush(i)
            start, pending, total = i, [], 0
        pending.append(sh)
        total += len(sh)
    if pending:
        flush(len(texts))
    return out


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(bands, N) uint64: one hash per band of `rows` signature values (band index mixed in)."""
    n, p = sig.shape
    assert p >= bands * rows, (p, bands, rows)
    blocks = sig[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)  # (N, B, R)
    keys = np.zeros((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(rows):
            keys = _mix64(keys + blocks[:, :, r] * _NGRAM_COEF[r])
        keys = _mix64(keys + np.arange(bands, dtype=np.uint64))
    return np.ascontiguousarray(keys.T)


def lsh_probability(jaccard: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """P(a pair of Jaccard similarity J becomes a candidate) = 1 - (1 - J^rows)^bands."""
    return 1.0 - (1.0 - np.asarray(jaccard, dtype=np.float64) ** rows) ** bands


def lsh_threshold(bands: int, rows: int) -> float:
    """The Jaccard where the S-curve is steepest, approximately (1/bands)^(1/rows)."""
    return float((1.0 / bands) ** (1.0 / rows))


def jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


def shingle_set(text: str, ngram: int = 5) -> set[int]:
    """The exact shingle set, for ground truth in tests and benchmarks."""
    return {int(x) for x in shingle_hashes(text, ngram)}
