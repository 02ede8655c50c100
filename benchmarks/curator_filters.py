"""Heuristic filter chain (Gopher quality + Gopher repetition + C4 + FineWeb), anemone-curator vs datatrove,
side by side on the embedded sample corpus (real prose and code-like docstrings), one thread each.

    uv run python benchmarks/curator_filters.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from anemone_core.cli import print_table
from anemone_curator.corpus import sample_corpus
from anemone_curator.filters import C4Quality, FineWebQuality, GopherQuality, GopherRepetition
from anemone_curator.formats import expand_inputs, read_documents
from anemone_curator.stage import Rejected


def ours(docs):
    chain = [GopherQuality(), GopherRepetition(), C4Quality(), FineWebQuality()]
    kept = []
    t = time.perf_counter()
    for d in docs:
        doc = dict(d)
        if all(f.reject_reason(doc) is None for f in chain):
            kept.append(d["id"])
    return time.perf_counter() - t, kept


def datatrove_chain(docs):
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    chain = [GopherQualityFilter(), GopherRepetitionFilter(), C4QualityFilter(), FineWebQualityFilter()]
    chain[0].filter(Document(text="warm up the spaCy tokenizer once.", id="0"))
    kept = []
    t = time.perf_counter()
    for d in docs:
        doc = Document(text=d["text"], id=d["id"])
        ok = True
        for f in chain:
            r = f.filter(doc)
            if not (r[0] if isinstance(r, tuple) else r):
                ok = False
                break
        if ok:
            kept.append(d["id"])
    return time.perf_counter() - t, kept


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=1, help="times through the corpus")
    args = ap.parse_args()
    docs = [
        d
        for p in expand_inputs([str(sample_corpus())])
        for d in read_documents(p)
        if not isinstance(d, Rejected)
    ]
    docs = docs * args.repeat
    words = sum(len(d["text"].split()) for d in docs) / len(docs)
    print(
        f"corpus: {len(docs)} documents of the embedded sample corpus, {words:.0f} words on average; 1 thread"
    )
    t_ours, k_ours = ours(docs)
    t_dt, k_dt = datatrove_chain(docs)
    agree = len(docs) - len(set(k_ours) ^ set(k_dt))
    rows = [
        ["anemone-curator", f"{len(docs) / t_ours:.0f}", "1.00", len(k_ours)],
        ["datatrove 0.10.1", f"{len(docs) / t_dt:.0f}", f"{t_dt / t_ours:.2f}", len(k_dt)],
    ]
    print_table(
        "Gopher + C4 + FineWeb filter chain (docs/s/core)", ["tool", "docs/s", "time / ours", "kept"], rows
    )
    print(f"keep/drop decisions agree on {agree / len(docs):.3f} of documents")


if __name__ == "__main__":
    main()
