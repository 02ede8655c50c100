"""One shard through one segment: the function the executors send to their workers.

It takes and returns plain data (paths, config dicts, stats dicts), so it pickles to a process pool and to
Ray alike. It writes its outputs through temporary files and renames; its stats file, written last, marks
the shard done, which is what a resumed run checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from anemone_curator.dedup import save_fingerprints
from anemone_curator.formats import READER, read_documents, write_records
from anemone_curator.stage import Doc, Rejected, Stage, StageStats, run_stages
from anemone_curator.stages import Segment, build_stage
from anemone_curator.tokens import token_dtype, write_indexed

_STAGE_CACHE: dict[str, list[Stage]] = {}  # per worker process: tokenizers and models load once


def _stages_for(segment: Segment) -> list[Stage]:
    key = json.dumps(segment.stages, sort_keys=True)
    if key not in _STAGE_CACHE:
        _STAGE_CACHE[key] = [build_stage(cfg) for cfg in segment.stages]  # type: ignore[misc]
    stages = _STAGE_CACHE[key]
    for stage, name in zip(stages, segment.stage_keys, strict=True):
        stage.stats = StageStats(name)  # fresh counts per shard
    return stages


def _read(spec: dict[str, Any], stats: dict[str, Any]) -> tuple[list[Doc], list[Rejected]]:
    docs: list[Doc] = []
    rejected: list[Rejected] = []
    if spec["segment"] == 0:
        read = StageStats(READER)
        for item in read_documents(spec["source"], spec["text_field"], spec["id_field"]):
            read.docs_in += 1
            if isinstance(item, Rejected):
                read.dropped[item.reason.split(" ")[0]] += 1
                rejected.append(item)
            else:
                docs.append(item)
        read.docs_out = len(docs)
        stats["stages"].append(read.to_dict())
        return docs, rejected
    # A later segment reads the previous segment's shard and drops what the dedup found.
    from anemone_curator.formats import read_records

    prev = read_records(spec["source"])
    labels = np.load(spec["labels"], mmap_mode="r")
    offset = spec["offset"]
    mine = np.asarray(labels[offset : offset + len(prev)])
    dup = StageStats(spec["dedup_key"], docs_in=len(prev))
    for row, doc in enumerate(prev):
        if mine[row] == offset + row:
            docs.append(doc)
        else:
            dup.dropped["duplicate"] += 1
    dup.docs_out = len(docs)
    stats["stages"].append(dup.to_dict())
    stats["duplicates"] = len(prev) - len(docs)
    return docs, rejected


def run_shard(spec: dict[str, Any]) -> dict[str, Any]:
    """Process `spec["source"]` through `spec["segment_plan"]`; returns (and writes) the shard's stats."""
    segment = Segment(**spec["segment_plan"])
    out = Path(spec["out"])
    stem = spec["stem"]
    stats: dict[str, Any] = {"shard": stem, "segment": segment.index, "stages": [], "duplicates": 0}
    docs, rejected = _read(spec, stats)
    stages = _stages_for(segment)
    docs, more = run_stages(stages, docs, spec["batch_size"])
    rejected += more
    stats["stages"] += [s.stats.to_dict() for s in stages]
    fmt = spec["output_format"]
    write_records(out / "rejects" / f"{stem}-s{segment.index}.{fmt}", [r.record() for r in rejected])
    stats["rejected"] = len(rejected)
    work = out / ".work" / f"s{segment.index}"
    if segment.dedup is not None:
        dedup = build_stage(segment.dedup)
        fp = dedup.fingerprint(docs)  # type: ignore[union-attr]
        save_fingerprints(work / stem, [d["id"] for d in docs], fp)
        write_records(work / f"{stem}.jsonl.zst", docs)
    else:
        _write_final(out, stem, fmt, docs, stages)
    stats["kept"] = len(docs)
    stats_path = out / ".work" / "stats" / f"s{segment.index}-{stem}.json"
    write_records(stats_path.with_suffix(".jsonl"), [stats])  # atomic; its presence marks the shard done
    return stats


def _write_final(out: Path, stem: str, fmt: str, docs: list[Doc], stages: list[Stage]) -> None:
    tokenize = next((s for s in stages if s.name == "tokenize"), None)
    if tokenize is not None:
        dtype = token_dtype(tokenize.vocab_size())  # type: ignore[attr-defined]
        write_indexed(out / "tokens" / stem, [d["tokens"] for d in docs], dtype)
        write_records(
            out / "tokens" / f"{stem}.jsonl.gz", [{"id": d["id"], "tokens": d["tokens"]} for d in docs]
        )
        docs = [{k: v for k, v in d.items() if k != "tokens"} for d in docs]
    write_records(out / "kept" / f"{stem}.{fmt}", docs)
