"""Run a pipeline: read shards, run segments on an executor, resolve dedup globally, write outputs and stats.

Output folder:

    pipeline.yaml                 the resolved config
    kept/<stem>.<fmt>             kept documents, one shard per input file (or per `shard_lines` slice:
                                  <stem>-p<k>), ids carried from the input
    rejects/<stem>-s<k>.<fmt>     dropped documents with {id, stage, reason, doc}
    duplicates/<stage>.jsonl.gz   {id: removed, kept_id: the document it duplicates}
    tokens/<stem>.bin|.idx|.jsonl.gz and tokens.bin/.idx (all shards, Megatron indexed dataset)
    stats.json                    per-stage counts; written last: its presence means the run finished

Resume: every shard's outputs are renamed into place before its stats file, so a rerun with the same config
skips finished shards and redoes the rest; the outputs are byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from anemone_core.errors import AnemoneError
from anemone_core.io import atomic_write_text
from anemone_curator.dedup import load_ids, resolve
from anemone_curator.executor import default_workers, local_pool, map_shards
from anemone_curator.formats import READER, count_lines, expand_inputs, file_stem, read_records, write_records
from anemone_curator.pipeline_config import PipelineConfig
from anemone_curator.shard import run_shard
from anemone_curator.stage import StageStats
from anemone_curator.stages import Segment, plan_segments
from anemone_curator.tokens import merge_indexed


@dataclass
class RunResult:
    output: Path
    stages: list[dict[str, Any]]
    totals: dict[str, int]
    resumed_shards: int = 0
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"output": str(self.output), "totals": self.totals, "stages": self.stages, "files": self.files}


def _resolved(cfg: PipelineConfig, inputs: list[Path]) -> dict[str, Any]:
    data = cfg.model_dump(mode="json")
    data["input"] = [str(p.absolute()) for p in inputs]
    data.pop("executor")  # how it runs does not change what it writes
    data.pop("keep_work")
    return data


def _prepare_output(out: Path, resolved: dict[str, Any], overwrite: bool) -> None:
    recipe = out / "pipeline.yaml"
    if out.exists() and overwrite:
        shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()):
        if not recipe.is_file():
            raise AnemoneError(
                f"output = {out} exists and is not a curator output (no pipeline.yaml): "
                "choose another output=... or pass --overwrite"
            )
        if yaml.safe_load(recipe.read_text(encoding="utf-8")) != resolved:
            raise AnemoneError(
                f"output = {out} holds a run of a different pipeline (its pipeline.yaml differs): "
                "choose another output=... or pass --overwrite to start over"
            )
        return  # same pipeline: resume
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(recipe, yaml.safe_dump(resolved, sort_keys=False))


def _plan_shards(inputs: list[Path], shard_lines: int | None) -> list[tuple[Path, str, int, int | None]]:
    """(file, shard name, first line, last line) per shard: a whole file, or `shard_lines`-line slices of it."""
    shards: list[tuple[Path, str, int, int | None]] = []
    for path in inputs:
        stem = file_stem(path)
        n = count_lines(path) if shard_lines and not path.name.endswith(".parquet") else 0
        if not shard_lines or n <= shard_lines:
            shards.append((path, stem, 0, None))
            continue
        for k, start in enumerate(range(0, n, shard_lines)):
            shards.append((path, f"{stem}-p{k:05d}", start, start + shard_lines))
    names = [name for _, name, _, _ in shards]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise AnemoneError(
            f"shard names {clash} collide (a file is named like a slice of another): rename it"
        )
    return shards


def _stats_path(out: Path, segment: int, stem: str) -> Path:
    return out / ".work" / "stats" / f"s{segment}-{stem}.jsonl"


def run_pipeline(
    cfg: PipelineConfig,
    overwrite: bool = False,
    progress: bool = True,
    on_shard_done: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run `cfg` end to end (resuming a matching earlier run in `cfg.output`); returns the counts."""
    if cfg.input:
        inputs = expand_inputs(cfg.input)
    else:
        from anemone_curator.corpus import sample_corpus

        inputs = expand_inputs([str(sample_corpus())])
    out = Path(cfg.output).expanduser().absolute()
    _prepare_output(out, _resolved(cfg, inputs), overwrite)
    if (out / "stats.json").is_file():
        return _result_from(
            out, json.loads((out / "stats.json").read_text(encoding="utf-8")), resumed=len(inputs)
        )

    shards = _plan_shards(inputs, cfg.shard_lines)
    stems = [stem for _, stem, _, _ in shards]
    workers = cfg.executor.workers or default_workers()
    segments = plan_segments(cfg.stages)
    all_stats: list[dict[str, Any]] = []
    resumed = 0
    counts: list[int] = []
    pool = None  # one local process pool for every segment of the run
    with contextlib.ExitStack() as stack:
        for seg in segments:
            specs, done = [], []
            for i, (path, stem, start, stop) in enumerate(shards):
                sp = _stats_path(out, seg.index, stem)
                if sp.is_file():
                    done.append(read_records(sp)[0])
                    continue
                spec: dict[str, Any] = {
                    "segment": seg.index,
                    "segment_plan": seg.__dict__,
                    "stem": stem,
                    "out": str(out),
                    "text_field": cfg.text_field,
                    "id_field": cfg.id_field,
                    "batch_size": cfg.batch_size,
                    "output_format": cfg.output_format,
                }
                if seg.index == 0:
                    spec.update(source=str(path), start=start, stop=stop)
                else:
                    prev = segments[seg.index - 1]
                    spec["source"] = str(out / ".work" / f"s{prev.index}" / f"{stem}.jsonl.zst")
                    spec["labels"] = str(out / ".work" / f"s{prev.index}" / "labels.npy")
                    spec["offset"] = int(sum(counts[:i]))
                    spec["dedup_key"] = prev.dedup_key
                specs.append(spec)
            resumed += len(done)
            if pool is None and specs and cfg.executor.kind == "local" and workers > 1 and len(shards) > 1:
                pool = stack.enter_context(local_pool(min(workers, len(shards))))
            done += _run_specs(specs, cfg, workers, seg, progress, on_shard_done, pool)
            by_stem = {s["shard"]: s for s in done}
            seg_stats = [by_stem[stem] for stem in stems]
            all_stats += seg_stats
            counts = [s["kept"] for s in seg_stats]
            if seg.dedup is not None:
                _resolve_dedup(out, seg, stems, counts, progress)

    files = _finish(out, stems, segments, cfg)
    summary = _summarize(all_stats, cfg)
    summary["files"] = files
    atomic_write_text(out / "stats.json", json.dumps(summary, indent=2) + "\n")
    if not cfg.keep_work:
        shutil.rmtree(out / ".work", ignore_errors=True)
    return _result_from(out, summary, resumed)


def _run_specs(
    specs, cfg: PipelineConfig, workers: int, seg: Segment, progress: bool, on_shard_done, pool
) -> list:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    results = []
    names = [s["stage"] for s in seg.stages] + ([seg.dedup["stage"]] if seg.dedup else [])
    label = f"segment {seg.index}: " + (
        " > ".join(names) if len(names) <= 2 else f"{names[0]} .. {names[-1]}"
    )
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=False) as bar:
        task = bar.add_task(label or f"segment {seg.index}", total=len(specs))
        for _spec, stats in map_shards(
            run_shard, specs, cfg.executor.kind, workers, cfg.executor.address, pool
        ):
            results.append(stats)
            bar.advance(task)
            if on_shard_done is not None:
                on_shard_done(stats)
    return results


def _resolve_dedup(out: Path, seg: Segment, stems: list[str], counts: list[int], progress: bool) -> None:
    work = out / ".work" / f"s{seg.index}"
    labels_path = work / "labels.npy"
    assert seg.dedup is not None and seg.dedup_key is not None
    if not labels_path.is_file():
        prefixes = [work / stem for stem in stems]
        verify = seg.dedup.get("verify")
        labels = resolve(prefixes, counts, verify=verify, partitions=seg.dedup.get("partitions", 1))
        _write_report(out / "duplicates" / f"{seg.dedup_key}.jsonl.gz", prefixes, counts, labels)
        tmp = work / "labels.tmp.npy"
        np.save(tmp, labels)
        tmp.replace(labels_path)


def _write_report(path: Path, prefixes: list[Path], counts: list[int], labels: np.ndarray) -> None:
    """{id, kept_id} per removed document, reading each shard's id list once."""
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    removed = np.nonzero(labels != np.arange(len(labels)))[0]
    kept = labels[removed]
    needed = np.unique(np.concatenate([removed, kept]))
    id_of: dict[int, str] = {}
    for s, prefix in enumerate(prefixes):
        sel = needed[(needed >= offsets[s]) & (needed < offsets[s + 1])]
        if len(sel):
            ids = load_ids(prefix)
            id_of.update({int(g): ids[int(g - offsets[s])] for g in sel})
    write_records(
        path, [{"id": id_of[int(r)], "kept_id": id_of[int(k)]} for r, k in zip(removed, kept, strict=True)]
    )


def _finish(out: Path, stems: list[str], segments: list[Segment], cfg: PipelineConfig) -> dict[str, str]:
    files = {"kept": str(out / "kept"), "rejects": str(out / "rejects")}
    if any(s.dedup for s in segments):
        files["duplicates"] = str(out / "duplicates")
    if any(s["stage"] == "tokenize" for s in segments[-1].stages):
        n = merge_indexed([out / "tokens" / stem for stem in stems], out / "tokens")
        files["tokens"] = str(out / "tokens")
        files["tokens_docs"] = str(n)
    return files


def _summarize(all_stats: list[dict[str, Any]], cfg: PipelineConfig) -> dict[str, Any]:
    merged: dict[str, StageStats] = {}
    for shard in all_stats:
        for st in shard["stages"]:
            s = StageStats.from_dict(st)
            if s.name in merged:
                merged[s.name].merge(s)
            else:
                merged[s.name] = s
    order = [READER] + [f"{i:02d}_{c.stage}" for i, c in enumerate(cfg.stages)]
    stages = [merged[k].to_dict() for k in order if k in merged]
    last = max(s["segment"] for s in all_stats) if all_stats else 0
    totals = {
        "input": merged[READER].docs_in if READER in merged else 0,
        "kept": sum(s["kept"] for s in all_stats if s["segment"] == last),
        "rejected": sum(s["rejected"] for s in all_stats),
        "duplicates": sum(s["duplicates"] for s in all_stats),
    }
    totals["unaccounted"] = totals["input"] - totals["kept"] - totals["rejected"] - totals["duplicates"]
    return {"totals": totals, "stages": stages}


def _result_from(out: Path, summary: dict[str, Any], resumed: int) -> RunResult:
    return RunResult(out, summary["stages"], summary["totals"], resumed, summary.get("files", {}))
