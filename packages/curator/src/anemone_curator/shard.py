"""One shard through one segment: the function the executors send to their workers.

It takes and returns plain data (paths, config dicts, stats dicts), so it pickles to a process pool and to
Ray alike. Documents stream through in batches: kept documents, rejects, tokens and dedup signatures are
written as they come (memory holds one batch plus 8 bytes x bands of dedup keys per document). Every output
goes to a temporary name renamed when complete; the stats file, written last, marks the shard done, which
is what a resumed run checks.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from anemone_curator.dedup import DedupStage, FingerprintWriter
from anemone_curator.formats import READER, RecordWriter, iter_records, read_documents, write_records
from anemone_curator.stage import Doc, Rejected, Stage, StageStats
from anemone_curator.stages import Segment, build_stage
from anemone_curator.tokens import IndexedWriter, token_dtype

_STAGE_CACHE: dict[str, list[Stage]] = {}  # per worker process: tokenizers and models load once


def _stages_for(segment: Segment) -> list[Stage]:
    key = json.dumps(segment.stages, sort_keys=True)
    if key not in _STAGE_CACHE:
        _STAGE_CACHE[key] = [build_stage(cfg) for cfg in segment.stages]  # type: ignore[misc]
    stages = _STAGE_CACHE[key]
    for stage, name in zip(stages, segment.stage_keys, strict=True):
        stage.stats = StageStats(name)  # fresh counts per shard
    return stages


def _source(spec: dict[str, Any], first: StageStats, rejects: list[Rejected]) -> Iterator[Doc]:
    """The shard's documents: parsed input (segment 0) or the previous segment's survivors minus duplicates."""
    if spec["segment"] == 0:
        lines = (spec.get("start", 0), spec.get("stop"))
        for item in read_documents(spec["source"], spec["text_field"], spec["id_field"], *lines):
            first.docs_in += 1
            if isinstance(item, Rejected):
                first.dropped[item.reason.split(" ")[0]] += 1
                rejects.append(item)
            else:
                first.docs_out += 1
                yield item
        return
    labels = np.load(spec["labels"], mmap_mode="r")
    offset = spec["offset"]
    for row, doc in enumerate(iter_records(spec["source"])):
        first.docs_in += 1
        if labels[offset + row] == offset + row:
            first.docs_out += 1
            yield doc
        else:
            first.dropped["duplicate"] += 1


def _batches(docs: Iterator[Doc], size: int) -> Iterator[list[Doc]]:
    while batch := list(islice(docs, size)):
        yield batch


def run_shard(spec: dict[str, Any]) -> dict[str, Any]:
    """Process `spec["source"]` through `spec["segment_plan"]`; returns (and writes) the shard's stats."""
    segment = Segment(**spec["segment_plan"])
    out, stem, fmt = Path(spec["out"]), spec["stem"], spec["output_format"]
    first = StageStats(READER if segment.index == 0 else spec["dedup_key"])
    stages = _stages_for(segment)
    dedup: DedupStage | None = build_stage(segment.dedup) if segment.dedup else None  # type: ignore[assignment]
    tokenize = next((s for s in stages if s.name == "tokenize"), None)
    work = out / ".work" / f"s{segment.index}"
    pending: list[Rejected] = []
    kept = rejected = 0
    with contextlib.ExitStack() as stack:
        rejects_w = stack.enter_context(RecordWriter(out / "rejects" / f"{stem}-s{segment.index}.{fmt}"))
        if dedup is not None:
            fingerprints = FingerprintWriter(work / stem)
            docs_w = stack.enter_context(RecordWriter(work / f"{stem}.jsonl.zst"))
        else:
            docs_w = stack.enter_context(RecordWriter(out / "kept" / f"{stem}.{fmt}"))
        if tokenize is not None:
            dtype = token_dtype(tokenize.vocab_size())  # type: ignore[attr-defined]
            tokens_w = stack.enter_context(IndexedWriter(out / "tokens" / stem, dtype))
            ids_w = stack.enter_context(RecordWriter(out / "tokens" / f"{stem}.jsonl.gz"))
        for batch in _batches(_source(spec, first, pending), spec["batch_size"]):
            for stage in stages:
                batch, dropped = stage.run(batch)
                pending += dropped
            rejects_w.write(r.record() for r in pending)
            rejected += len(pending)
            pending = []
            kept += len(batch)
            if dedup is not None:
                fingerprints.add([d["id"] for d in batch], dedup.fingerprint(batch))
            if tokenize is not None:
                tokens_w.add([d["tokens"] for d in batch])
                ids_w.write({"id": d["id"], "tokens": d.pop("tokens")} for d in batch)
            docs_w.write(batch)
        rejects_w.write(r.record() for r in pending)  # reader rejects after the last batch
        rejected += len(pending)
        if dedup is not None:
            fingerprints.close()
    stats = {
        "shard": stem,
        "segment": segment.index,
        "stages": [first.to_dict()] + [s.stats.to_dict() for s in stages],
        "duplicates": 0 if segment.index == 0 else sum(first.dropped.values()),
        "rejected": rejected,
        "kept": kept,
    }
    write_records(out / ".work" / "stats" / f"s{segment.index}-{stem}.jsonl", [stats])  # marks the shard done
    return stats
