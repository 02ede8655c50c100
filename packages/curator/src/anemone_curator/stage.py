"""Stages: small classes with one method over documents; the base classes do batching and statistics.

A document is a plain dict with at least `id` (a stable string carried end to end) and `text`; stages
may add fields (`language`, `language_score`, `pii`, `tokens`). Three kinds of stage:

- `Filter.reject_reason(doc) -> str | None`: drop a document, naming why (the reason lands in the rejects).
- `Mapper.map(doc) -> doc`: rewrite or annotate a document.
- global stages (dedup) that need every shard at once live in `dedup.py`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

Doc = dict[str, Any]


@dataclass
class StageStats:
    """Per-stage counts; merged across shards by addition."""

    name: str
    docs_in: int = 0
    docs_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> count
    counters: Counter[str] = field(default_factory=Counter)  # stage-specific, e.g. pii emails found

    def merge(self, other: StageStats) -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.dropped.update(other.dropped)
        self.counters.update(other.counters)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "dropped": dict(sorted(self.dropped.items())),
            "counters": dict(sorted(self.counters.items())),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageStats:
        return cls(d["name"], d["docs_in"], d["docs_out"], Counter(d["dropped"]), Counter(d["counters"]))


@dataclass
class Rejected:
    """A dropped document and why: written to the rejects with the stage name and reason."""

    doc: Doc
    stage: str
    reason: str

    def record(self) -> Doc:
        return {"id": self.doc.get("id"), "stage": self.stage, "reason": self.reason, "doc": self.doc}


class Stage:
    """Base of every per-document stage: `run(batch)` counts what goes in and out."""

    name: ClassVar[str] = "stage"

    def __init__(self) -> None:
        self.stats = StageStats(self.name)

    def setup(self) -> None:
        """Load heavy state (models, tokenizers) once per worker, after pickling to it."""

    def run(self, docs: list[Doc]) -> tuple[list[Doc], list[Rejected]]:
        raise NotImplementedError


class Filter(Stage):
    """Subclasses implement `reject_reason`; a reason is a short stable string such as `gopher_min_words`."""

    def reject_reason(self, doc: Doc) -> str | None:
        raise NotImplementedError

    def run(self, docs: list[Doc]) -> tuple[list[Doc], list[Rejected]]:
        kept: list[Doc] = []
        rejected: list[Rejected] = []
        for doc in docs:
            reason = self.reject_reason(doc)
            if reason is None:
                kept.append(doc)
            else:
                self.stats.dropped[reason] += 1
                rejected.append(Rejected(doc, self.name, reason))
        self.stats.docs_in += len(docs)
        self.stats.docs_out += len(kept)
        return kept, rejected


class Mapper(Stage):
    """Subclasses implement `map`; returning None drops the document with reason `<name>_empty`."""

    def map(self, doc: Doc) -> Doc | None:
        raise NotImplementedError

    def run(self, docs: list[Doc]) -> tuple[list[Doc], list[Rejected]]:
        kept: list[Doc] = []
        rejected: list[Rejected] = []
        for doc in docs:
            out = self.map(doc)
            if out is None:
                reason = f"{self.name}_empty"
                self.stats.dropped[reason] += 1
                rejected.append(Rejected(doc, self.name, reason))
            else:
                kept.append(out)
        self.stats.docs_in += len(docs)
        self.stats.docs_out += len(kept)
        return kept, rejected


def run_stages(
    stages: list[Stage], docs: Iterable[Doc], batch_size: int = 256
) -> tuple[list[Doc], list[Rejected]]:
    """Push documents through `stages` in batches; returns (kept in input order, rejected)."""
    kept_all: list[Doc] = []
    rejected_all: list[Rejected] = []
    batch: list[Doc] = []

    def flush(batch: list[Doc]) -> None:
        for stage in stages:
            batch, rejected = stage.run(batch)
            rejected_all.extend(rejected)
        kept_all.extend(batch)

    for doc in docs:
        batch.append(doc)
        if len(batch) >= batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    return kept_all, rejected_all
