"""Exact and fuzzy deduplication across every shard, memory-bounded.

A dedup stage runs in two steps. Per shard (in the workers): `fingerprint(docs)` computes keys, (K, n) uint64
- one normalized-text hash for exact dedup, one hash per LSH band for fuzzy - and, for fuzzy, the MinHash
signatures; they are spilled to disk beside the shard. Globally (`resolve`): one band at a time, and within a
band one hash partition at a time, the keys of all shards are read (memory ~16 bytes x docs / partitions),
sorted, and documents sharing a key are joined (optionally only if their signatures agree on at least
`verify_threshold` of the positions); connected components (vectorized union-find) give for each document
the id it duplicates: the first document of its component in input order is kept.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from anemone_curator.minhash import band_keys, signatures
from anemone_curator.stage import Doc, StageStats

SPACE_RE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC, lowercase, whitespace collapsed: the text that exact dedup hashes."""
    return SPACE_RE.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def text_hash(text: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=8).digest(), "little"
    )


class DedupStage:
    """Base of the global stages: per-shard fingerprints, then one global resolve."""

    name = "dedup"
    uses_signatures = False

    def __init__(self) -> None:
        self.stats = StageStats(self.name)

    def fingerprint(self, docs: list[Doc]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def verify_threshold(self) -> float | None:
        return None


class ExactDedup(DedupStage):
    """Drop documents whose normalized text equals an earlier document's."""

    name = "exact_dedup"

    def fingerprint(self, docs: list[Doc]) -> dict[str, np.ndarray]:
        keys = np.array([text_hash(d["text"]) for d in docs], dtype=np.uint64).reshape(1, -1)  # (1, n)
        return {"keys": keys}


class FuzzyDedup(DedupStage):
    """MinHash + LSH: drop near-duplicates (word n-gram Jaccard above roughly (1/bands)^(1/rows))."""

    name = "fuzzy_dedup"
    uses_signatures = True

    def __init__(
        self,
        bands: int = 20,
        rows: int = 6,
        ngram: int = 5,
        seed: int = 1,
        verify: float | None = 0.7,
        partitions: int = 1,
    ) -> None:
        super().__init__()
        self.bands, self.rows, self.ngram, self.seed = bands, rows, ngram, seed
        self.verify, self.partitions = verify, partitions

    def fingerprint(self, docs: list[Doc]) -> dict[str, np.ndarray]:
        sig = signatures([d["text"] for d in docs], self.bands * self.rows, self.ngram, self.seed)  # (n, P)
        return {"keys": band_keys(sig, self.bands, self.rows), "sig": sig}  # (B, n), (n, P)

    def verify_threshold(self) -> float | None:
        return self.verify


# ---- spill files -------------------------------------------------------------------------------------------


def save_fingerprints(prefix: Path, ids: list[str], fp: dict[str, np.ndarray]) -> None:
    """`<prefix>.keys.npy`, `<prefix>.sig.npy`, `<prefix>.ids.json`, each written then renamed."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for name, arr in fp.items():
        tmp = prefix.with_name(prefix.name + f".{name}.tmp.npy")
        np.save(tmp, arr)
        tmp.replace(prefix.with_name(prefix.name + f".{name}.npy"))
    tmp = prefix.with_name(prefix.name + ".ids.tmp")
    tmp.write_text(json.dumps(ids), encoding="utf-8")
    tmp.replace(prefix.with_name(prefix.name + ".ids.json"))


class FingerprintWriter:
    """A shard's fingerprints, batch by batch: keys kept in memory (8 bytes x bands per document), signatures
    streamed to disk; `close()` writes `.keys.npy` (bands, n), `.sig.npy` (n, P) and `.ids.json`."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        prefix.parent.mkdir(parents=True, exist_ok=True)
        self.keys: list[np.ndarray] = []
        self.ids: list[str] = []
        self._sig_raw = prefix.with_name(prefix.name + ".sig.raw")
        self._sig_fh = None
        self._sig_cols = 0

    def add(self, ids: list[str], fp: dict[str, np.ndarray]) -> None:
        self.ids += ids
        self.keys.append(fp["keys"])
        if "sig" in fp:
            if self._sig_fh is None:
                self._sig_fh = open(self._sig_raw, "wb")  # noqa: SIM115 - closed in close()
            self._sig_cols = fp["sig"].shape[1]
            self._sig_fh.write(np.ascontiguousarray(fp["sig"], dtype=np.uint32).tobytes())

    def close(self) -> None:
        n = len(self.ids)
        keys = np.concatenate(self.keys, axis=1) if self.keys else np.zeros((0, 0), dtype=np.uint64)
        if self._sig_fh is not None:
            # Prepend an .npy header to the streamed rows; the copy is sequential and never holds them all.
            self._sig_fh.close()
            tmp = self.prefix.with_name(self.prefix.name + ".sig.tmp.npy")
            header = {"descr": "<u4", "fortran_order": False, "shape": (n, self._sig_cols)}
            with open(tmp, "wb") as out, open(self._sig_raw, "rb") as src:
                np.lib.format.write_array_header_1_0(out, header)
                shutil.copyfileobj(src, out, 1 << 24)
            tmp.replace(self.prefix.with_name(self.prefix.name + ".sig.npy"))
            self._sig_raw.unlink(missing_ok=True)
        save_fingerprints(self.prefix, self.ids, {"keys": keys})


def _load(prefix: Path, name: str) -> np.ndarray:
    return np.load(prefix.with_name(prefix.name + f".{name}.npy"), mmap_mode="r")


def load_ids(prefix: Path) -> list[str]:
    return json.loads(prefix.with_name(prefix.name + ".ids.json").read_text(encoding="utf-8"))


# ---- connected components ----------------------------------------------------------------------------------


def union(parent: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    """Join the components of each pair (u[i], v[i]) in place; every root is the smallest index of its component."""
    if len(u) == 0:
        return
    while True:
        _compress(parent)
        ru, rv = parent[u], parent[v]
        differ = ru != rv
        if not differ.any():
            return
        ru, rv = ru[differ], rv[differ]
        lo, hi = np.minimum(ru, rv), np.maximum(ru, rv)
        np.minimum.at(parent, hi, lo)  # the larger root hangs under the smaller one


def _compress(parent: np.ndarray) -> None:
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return
        parent[:] = grand


def candidate_pairs(keys: np.ndarray, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (first, other) of documents sharing a key; `first` is the earliest document of its key."""
    order = np.argsort(keys, kind="stable")
    k, g = keys[order], gids[order]
    same = np.empty(len(k), dtype=bool)
    same[0:1] = False
    same[1:] = k[1:] == k[:-1]
    run_start = np.maximum.accumulate(np.where(~same, np.arange(len(k)), 0))
    first = g[run_start]
    return first[same], g[same]


def resolve(
    prefixes: Sequence[Path], counts: Sequence[int], verify: float | None = None, partitions: int = 1
) -> np.ndarray:
    """(N,) int64: for each document (global index in shard order), the index of the document it keeps."""
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(offsets[-1])
    parent = np.arange(n, dtype=np.int64)
    if n == 0:
        return parent
    n_keys = 0
    for p, c in zip(prefixes, counts, strict=True):
        if c:
            n_keys = int(_load(p, "keys").shape[0])
            break
    sigs = [
        _load(p, "sig") if verify is not None and c else None for p, c in zip(prefixes, counts, strict=True)
    ]
    for band in range(n_keys):
        for part in range(partitions):
            chunks_k, chunks_g = [], []
            for s, (p, c) in enumerate(zip(prefixes, counts, strict=True)):
                if not c:
                    continue
                row = np.asarray(_load(p, "keys")[band])  # (n_s,) one contiguous band row from disk
                if partitions > 1:
                    idx = np.nonzero(row % np.uint64(partitions) == np.uint64(part))[0]
                    row = row[idx]
                else:
                    idx = np.arange(c)
                chunks_k.append(row)
                chunks_g.append(idx + offsets[s])
            if not chunks_k:
                continue
            u, v = candidate_pairs(np.concatenate(chunks_k), np.concatenate(chunks_g))
            if verify is not None and len(u):
                keep = estimated_jaccard(sigs, offsets, u, v) >= verify
                u, v = u[keep], v[keep]
            union(parent, u, v)
    _compress(parent)
    return parent


def estimated_jaccard(sigs: list, offsets: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Fraction of equal signature positions for each pair, reading rows from the memory-mapped spill files."""

    def rows(g: np.ndarray) -> np.ndarray:
        shard = np.searchsorted(offsets, g, side="right") - 1
        out = None
        for s in np.unique(shard):
            sel = shard == s
            block = np.asarray(sigs[s][g[sel] - offsets[s]])
            if out is None:
                out = np.empty((len(g), block.shape[1]), dtype=block.dtype)
            out[sel] = block
        return out

    return (rows(u) == rows(v)).mean(axis=1)


def duplicate_labels(texts: Sequence[str], stage: DedupStage, shard_size: int = 10_000) -> np.ndarray:
    """In-process dedup of a list of texts (the Python API, tests, benchmarks): (N,) index of the kept copy.

    Runs the same per-shard fingerprint + spill + global resolve as a pipeline, in a temporary folder.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="anemone-dedup-") as tmp:
        prefixes, counts = [], []
        for k, start in enumerate(range(0, len(texts), shard_size)):
            docs = [{"id": str(i), "text": t} for i, t in enumerate(texts[start : start + shard_size], start)]
            prefix = Path(tmp) / f"shard-{k:05d}"
            save_fingerprints(prefix, [d["id"] for d in docs], stage.fingerprint(docs))
            prefixes.append(prefix)
            counts.append(len(docs))
        return resolve(
            prefixes, counts, verify=stage.verify_threshold(), partitions=getattr(stage, "partitions", 1)
        )
