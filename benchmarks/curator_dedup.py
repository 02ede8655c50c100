"""MinHash dedup, side by side: anemone-curator vs datasketch (MinHash + MinHashLSH) vs datatrove's 4-stage
MinHash pipeline, on one synthetic corpus with planted near-duplicates of exactly known Jaccard.

    uv run python benchmarks/curator_dedup.py [--docs 20000] [--skip-datatrove]

One thread, one process each (docs/s/core). Recall: planted pairs whose duplicate was removed (joined to its
original); precision: removed documents that are planted duplicates. Also: peak traced memory of our dedup vs
corpus size.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
import tracemalloc

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from anemone_core.cli import print_table  # noqa: E402
from anemone_curator.corpus import near_duplicate_corpus  # noqa: E402
from anemone_curator.dedup import FuzzyDedup, duplicate_labels  # noqa: E402
from anemone_curator.minhash import WORD_RE  # noqa: E402

JACCARDS = (0.8, 0.85, 0.9, 0.95, 1.0)


def score(removed: set[int], pairs) -> tuple[float, float]:
    dups = {p.duplicate for p in pairs}
    recall = len(removed & dups) / len(dups)
    precision = len(removed & dups) / max(1, len(removed))
    return recall, precision


def ours(texts, pairs):
    t = time.perf_counter()
    labels = duplicate_labels(texts, FuzzyDedup())  # defaults: 20 x 6, verify 0.7
    dt = time.perf_counter() - t
    removed = set(np.nonzero(labels != np.arange(len(texts)))[0].tolist())
    return dt, *score(removed, pairs), "20 bands x 6 rows + verify 0.7, 5-gram words"


def datasketch_run(texts, pairs):
    from datasketch import MinHash, MinHashLSH

    t = time.perf_counter()
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    removed = set()
    for i, text in enumerate(texts):
        words = WORD_RE.findall(text.lower())
        m = MinHash(num_perm=128)
        m.update_batch([" ".join(words[k : k + 5]).encode() for k in range(max(1, len(words) - 4))])
        if lsh.query(m):
            removed.add(i)  # a near-duplicate of an earlier kept document
        else:
            lsh.insert(i, m)
    dt = time.perf_counter() - t
    b, r = lsh.b, lsh.r
    return dt, *score(removed, pairs), f"threshold 0.8 -> {b} bands x {r} rows, 5-gram words"


def datatrove_run(texts, pairs, work):
    import json

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.logging import logger

    logger.remove()
    os.makedirs(f"{work}/in", exist_ok=True)
    with open(f"{work}/in/data.jsonl", "w") as fh:
        for i, text in enumerate(texts):
            fh.write(json.dumps({"id": str(i), "text": text}) + "\n")
    cfg = MinhashConfig()  # 14 buckets x 8 hashes, 5-grams
    t = time.perf_counter()
    common = {"logging_dir": None, "workers": 1, "skip_completed": False}
    LocalPipelineExecutor(
        [JsonlReader(f"{work}/in"), MinhashDedupSignature(f"{work}/sigs", config=cfg)], tasks=1, **common
    ).run()
    LocalPipelineExecutor(
        [MinhashDedupBuckets(f"{work}/sigs", f"{work}/buckets", config=cfg)], tasks=cfg.num_buckets, **common
    ).run()
    LocalPipelineExecutor(
        [MinhashDedupCluster(f"{work}/buckets", f"{work}/remove", config=cfg)], tasks=1, **common
    ).run()
    LocalPipelineExecutor(
        [
            JsonlReader(f"{work}/in"),
            MinhashDedupFilter(f"{work}/remove", exclusion_writer=JsonlWriter(f"{work}/removed")),
            JsonlWriter(f"{work}/kept"),
        ],
        tasks=1,
        **common,
    ).run()
    dt = time.perf_counter() - t
    import glob
    import gzip

    removed = set()
    for path in glob.glob(f"{work}/removed/*"):
        with gzip.open(path, "rt") as fh:
            removed |= {int(json.loads(line)["id"]) for line in fh}
    return dt, *score(removed, pairs), "14 buckets x 8 hashes (default), spaCy words"


@functools.lru_cache(maxsize=1)
def _memory_corpus(n_docs: int) -> list[str]:
    return near_duplicate_corpus(n_docs, n_words=300, dup_fraction=0.1, jaccards=JACCARDS, seed=5)[0]


def peak_memory(n_docs: int, partitions: int) -> tuple[float, float]:
    """(peak MB of the signature step for one 10k-doc shard, peak MB of the global resolve) via tracemalloc."""
    texts = _memory_corpus(n_docs)
    import tempfile
    from pathlib import Path

    from anemone_curator.dedup import resolve, save_fingerprints

    stage = FuzzyDedup(partitions=partitions)
    with tempfile.TemporaryDirectory() as tmp:
        prefixes, counts, sig_peak = [], [], 0.0
        for k, start in enumerate(range(0, n_docs, 10_000)):
            docs = [{"id": str(i), "text": t} for i, t in enumerate(texts[start : start + 10_000], start)]
            tracemalloc.start()
            fp = stage.fingerprint(docs)
            sig_peak = max(sig_peak, tracemalloc.get_traced_memory()[1] / 2**20)
            tracemalloc.stop()
            save_fingerprints(Path(tmp) / f"s{k}", [d["id"] for d in docs], fp)
            prefixes.append(Path(tmp) / f"s{k}")
            counts.append(len(docs))
        tracemalloc.start()
        resolve(prefixes, counts, partitions=partitions)
        res_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return sig_peak, res_peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--memory", type=int, nargs="*", default=[10_000, 20_000, 40_000], help="corpus sizes")
    ap.add_argument("--work", default="/tmp/curator_bench_dedup")
    args = ap.parse_args()
    import shutil

    import torch

    torch.set_num_threads(1)
    shutil.rmtree(args.work, ignore_errors=True)
    texts, pairs = near_duplicate_corpus(args.docs, n_words=300, dup_fraction=0.1, jaccards=JACCARDS, seed=0)
    js = np.array([p.jaccard for p in pairs])
    print(
        f"corpus: {len(texts)} docs x 300 words, {len(pairs)} planted near-duplicates, "
        f"Jaccard {js.min():.2f}..{js.max():.2f} (mean {js.mean():.2f}); 1 thread per run"
    )
    runs = {"anemone-curator": ours(texts, pairs), "datasketch": datasketch_run(texts, pairs)}
    if not args.skip_datatrove:
        runs["datatrove"] = datatrove_run(texts, pairs, args.work)
    base = runs["anemone-curator"][0]
    rows = [
        [name, f"{len(texts) / dt:.0f}", f"{dt / base:.2f}", f"{rec:.3f}", f"{prec:.3f}", note]
        for name, (dt, rec, prec, note) in runs.items()
    ]
    print_table(
        "MinHash dedup (docs/s/core)",
        ["tool", "docs/s", "time / ours", "recall", "precision", "setting"],
        rows,
    )
    if not args.memory:
        return
    mem_rows = []
    for n in args.memory:
        for parts in (1, 4):
            sig, res = peak_memory(n, parts)
            mem_rows.append([n, parts, f"{sig:.1f}", f"{res:.1f}"])
            print(
                f"  memory: {n} docs, {parts} partitions: signatures {sig:.1f} MB, resolve {res:.1f} MB",
                flush=True,
            )
    print_table(
        "our dedup peak traced memory (MB)",
        ["docs", "partitions", "signatures (per 10k shard)", "global resolve"],
        mem_rows,
    )


if __name__ == "__main__":
    main()
