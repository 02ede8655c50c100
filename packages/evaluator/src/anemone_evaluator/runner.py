"""Evaluate tasks against a target: build requests, ask in chunks (progress, cache), score, aggregate, write.

Outputs, written atomically into one folder:
  results.json   per task and metric: value, stderr, 95% bootstrap CI, n; task and model fingerprints;
                 the full resolved config; timings.
  samples.jsonl  one line per document: prompt, target, response (or loglikelihoods), extracted answer, scores.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from anemone_core.errors import AnemoneError
from anemone_core.io import anemone_home, atomic_dir
from anemone_evaluator.eval_config import EvalConfig
from anemone_evaluator.filters import build_filter
from anemone_evaluator.interceptors import InterceptedTarget, RequestCache
from anemone_evaluator.metrics import (
    aggregate,
    check_metrics,
    count_bytes,
    count_words,
    score_generation,
    score_multiple_choice,
)
from anemone_evaluator.requests import GenRequest, LoglikRequest, RollingRequest, Target
from anemone_evaluator.tasks import Sample, Task, resolve_tasks

# Requests per call into the target: the progress bar's step and the cache's commit unit. Scoring requests
# are cheap (a chunk still fills several batches); an endpoint generation can take a second each. The local
# target decodes with continuous batching, which idles while a chunk's last sequences finish: larger chunks.
CHUNK = {"loglikelihood": 256, "generate": 32, "generate_local": 256}


def build_target(cfg: EvalConfig) -> Target:
    if cfg.endpoint:
        from anemone_evaluator.endpoint_target import EndpointTarget

        e = cfg.endpoint_opts
        return EndpointTarget(cfg.endpoint, e.model, e.api_key_env, e.concurrency, e.timeout_s, e.max_retries,
                              e.backoff_s, batch_size=e.batch_size)
    from anemone_core.models import resolve_model
    from anemone_evaluator.local_target import LocalTarget

    lc = cfg.local
    if lc.threads:
        import torch

        torch.set_num_threads(lc.threads)
    return LocalTarget(resolve_model(cfg.model), lc.batch_size, lc.device, lc.dtype, lc.max_length, lc.prefix_cache)


def _chunked(fn: Callable[[list[Any]], list[Any]], reqs: list[Any], advance: Callable[[int], None],
             size: int = CHUNK["loglikelihood"]) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(reqs), size):
        part = reqs[start: start + size]
        out += fn(part)
        advance(len(part))
    return out


def run_task(task: Task, target: Any, cfg: EvalConfig, advance: Callable[[int], None],
             samples: list[Sample] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score one task: (metrics {name: {value, stderr, ci95, n, ...}}, per-sample records)."""
    check_metrics(task.name, task.output_type, task.metrics)
    samples = samples if samples is not None else task.samples(cfg.num_fewshot, cfg.fewshot_seed, cfg.limit)
    chat = cfg.chat_template
    records: list[dict[str, Any]] = []
    per_metric: dict[str, list[Any]] = {m: [] for m in task.metrics}
    if task.output_type == "multiple_choice":
        # As lm-eval: after a chat template's assistant header the choice follows directly, with no delimiter.
        delim = "" if chat else task.config.target_delimiter
        reqs = [LoglikRequest(s.prompt, delim + c, chat) for s in samples for c in s.choices]
        answers = iter(_chunked(target.loglikelihood, reqs, advance))
        for s in samples:
            res = [next(answers) for _ in s.choices]
            lls = [r[0] for r in res]
            scores = score_multiple_choice(lls, [r[1] for r in res], s.choices, s.target, task.metrics)
            for m, v in scores.items():
                per_metric[m].append(v)
            records.append({"prompt": s.prompt, "choices": s.choices, "target": s.target, "loglikelihoods": lls,
                            "extracted": max(range(len(lls)), key=lls.__getitem__), "scores": scores})
    elif task.output_type == "generate_until":
        kw = task.config.generation_kwargs
        if kw.get("do_sample") or float(kw.get("temperature", 0) or 0) > 0:
            raise AnemoneError(f"task '{task.name}' asks for sampling (generation_kwargs {kw}): only greedy "
                               "decoding is supported; set do_sample: false")
        until = kw.get("until", [])
        until = tuple([until] if isinstance(until, str) else until)
        gen_reqs = [GenRequest(s.prompt, until, int(kw.get("max_gen_toks", 256)), chat) for s in samples]
        responses = _chunked(target.generate, gen_reqs, advance,
                             CHUNK["generate" if cfg.endpoint else "generate_local"])
        pipelines = [(p.name, build_filter(p.filter)) for p in task.config.filter_list] or [("none", lambda t: t)]
        options = {m.metric: m.model_dump() for m in task.config.metric_list}
        for s, resp in zip(samples, responses, strict=True):
            extracted = {name: fn(resp) for name, fn in pipelines}
            scores = {}
            for m in task.metrics:
                for name, value in extracted.items():
                    key = m if len(pipelines) == 1 else f"{m}[{name}]"
                    scores[key] = score_generation(value, s.target, m, options.get(m, {}))
                    per_metric.setdefault(key, []).append(scores[key])
            records.append({"prompt": s.prompt, "target": s.target, "response": resp,
                            "extracted": extracted if len(pipelines) > 1 else next(iter(extracted.values())),
                            "scores": scores})
        per_metric = {k: v for k, v in per_metric.items() if v}
    else:
        lls = _chunked(target.loglikelihood_rolling, [RollingRequest(s.target) for s in samples], advance)
        for s, ll in zip(samples, lls, strict=True):
            words, nbytes = count_words(s.target), count_bytes(s.target)
            for m in task.metrics:
                per_metric[m].append((ll, words, nbytes))
            records.append({"prompt": s.target[:200], "loglikelihood": ll, "words": words, "bytes": nbytes,
                            "scores": {"bits_per_byte": -ll / nbytes / 0.6931471805599453}})
    for s, rec in zip(samples, records, strict=True):
        rec.update(task=task.name, doc_id=s.doc_id)
    metrics = {m: aggregate(m, v, n_boot=max(cfg.bootstrap, 1)) for m, v in per_metric.items()}
    return metrics, records


def n_requests(task: Task, samples: list[Sample]) -> int:
    return sum(len(s.choices) for s in samples) if task.output_type == "multiple_choice" else len(samples)


def _advance(bar: Any, job: Any, n: int) -> None:
    bar.advance(job, n)


def evaluate(cfg: EvalConfig, target: Target | None = None, progress: bool = True,
             log_path: Path | None = None) -> tuple[dict, list[dict]]:
    """Run every task of `cfg`; returns (results, sample records). Writes nothing but the cache and `log_path`."""
    tasks = resolve_tasks(cfg.tasks, cfg.task_dirs)  # fails on an unknown task before loading a model
    task_samples = [(t, t.samples(cfg.num_fewshot, cfg.fewshot_seed, cfg.limit)) for t in tasks]
    for t, _ in task_samples:
        check_metrics(t.name, t.output_type, t.metrics)
    inner = target or build_target(cfg)
    use_cache = cfg.cache if cfg.cache is not None else bool(cfg.endpoint)
    cache = RequestCache(cfg.cache_path or anemone_home() / "eval-cache.sqlite") if use_cache else None
    wrapped = InterceptedTarget(inner, cfg.system_prompt, cfg.strip_reasoning, log_path, cache)
    results: dict[str, Any] = {"tasks": {}}
    records: list[dict] = []
    from rich.progress import Progress

    t_start = time.perf_counter()
    try:
        with Progress(disable=not progress, transient=False) as bar:
            for task, samples in task_samples:
                job = bar.add_task(f"{task.name} ({task.output_type})", total=n_requests(task, samples))
                t0 = time.perf_counter()
                metrics, recs = run_task(task, wrapped, cfg, functools.partial(_advance, bar, job), samples)
                seconds = time.perf_counter() - t0
                results["tasks"][task.name] = {
                    "output_type": task.output_type, "metrics": metrics, "n": len(samples),
                    "num_fewshot": task.config.num_fewshot if cfg.num_fewshot is None else cfg.num_fewshot,
                    "chat_template": cfg.chat_template, "fingerprint": task.fingerprint(), "source": task.source,
                    "label": task.config.metadata.get("label", ""), "ignored_keys": task.ignored_keys,
                    "seconds": round(seconds, 3), "samples_per_s": round(len(samples) / max(seconds, 1e-9), 3),
                }
                records += recs
    finally:
        wrapped.close()
    results.update(
        model=inner.describe(), config=cfg.model_dump(), created=datetime.now(UTC).isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - t_start, 3), requests=dict(wrapped.stats),
        versions=_versions(),
    )
    return results, records


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("anemone-evaluator", "torch", "transformers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def default_output(model_name: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path("anemone-eval") / f"{model_name}-{stamp}"


def write_results(out: str | Path, results: dict, records: list[dict], overwrite: bool = False,
                  request_log: Path | None = None) -> Path:
    """results.json + samples.jsonl (+ requests.jsonl), appearing together or not at all."""
    out = Path(out)
    log_text = request_log.read_text(encoding="utf-8") if request_log and request_log.is_file() else None
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        with (tmp / "samples.jsonl").open("w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, default=str, ensure_ascii=False) + "\n")
        if log_text is not None:
            (tmp / "requests.jsonl").write_text(log_text, encoding="utf-8")
    return out
