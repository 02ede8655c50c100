"""Executors: run one function over many shard specs, locally (a process pool) or on Ray, unchanged.

Either way a failing shard fails the run with that shard's error, and a worker that dies (killed, out of
memory) fails it too instead of hanging: the process pool reports a broken pool, Ray a crashed worker
(tasks are not retried, so the error surfaces at once).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from anemone_core.errors import AnemoneError, require

Spec = dict[str, Any]


class ShardFailed(AnemoneError):
    """A shard raised or its worker died; the message names the shard and the cause."""


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def local_pool(workers: int):
    """A process pool to reuse across the segments of one run (spawn, not fork: the parent may hold threads,
    from Ray or tokenizers, that fork would copy in a broken state)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))


def map_shards(
    fn: Callable[[Spec], dict[str, Any]],
    specs: list[Spec],
    kind: str,
    workers: int,
    address: str | None,
    pool: Any = None,
) -> Iterator[tuple[Spec, dict[str, Any]]]:
    """Yield (spec, result) as shards finish, in completion order; `pool` reuses a `local_pool`."""
    if not specs:
        return
    if kind == "ray":
        yield from _map_ray(fn, specs, workers, address)
    elif workers == 1 or len(specs) == 1:
        for spec in specs:
            try:
                result = fn(spec)
            except AnemoneError:
                raise
            except Exception as exc:
                raise ShardFailed(
                    f"shard {spec['stem']} (segment {spec['segment']}) failed: {exc!r}"
                ) from exc
            yield spec, result
    else:
        yield from _map_local(fn, specs, workers, pool)


def _map_local(
    fn: Callable[[Spec], dict[str, Any]], specs: list[Spec], workers: int, shared: Any
) -> Iterator:
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    pool = shared if shared is not None else local_pool(min(workers, len(specs)))
    futures = {pool.submit(fn, spec): spec for spec in specs}
    try:
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                spec = futures[fut]
                try:
                    yield spec, fut.result()
                except BrokenProcessPool as exc:
                    raise ShardFailed(
                        f"a worker process died (killed or out of memory) while shard {spec['stem']} "
                        f"(segment {spec['segment']}) was running: rerun to resume, with fewer "
                        "executor.workers if memory is short"
                    ) from exc
                except AnemoneError:
                    raise
                except Exception as exc:
                    raise ShardFailed(
                        f"shard {spec['stem']} (segment {spec['segment']}) failed: {exc!r}"
                    ) from exc
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    if shared is None:
        pool.shutdown(wait=True)


def _map_ray(
    fn: Callable[[Spec], dict[str, Any]], specs: list[Spec], workers: int, address: str | None
) -> Iterator:
    ray = require("ray", "pip install 'ray[default]>=2.60'", "the Ray executor")
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        elif workers:
            kwargs["num_cpus"] = workers
        ray.init(**kwargs)
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        refs = {remote.remote(spec): spec for spec in specs}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            spec = refs[done[0]]
            try:
                yield spec, ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:
                for ref in pending:
                    ray.cancel(ref, force=True)
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                if isinstance(cause, AnemoneError):
                    raise ShardFailed(str(cause)) from exc
                raise ShardFailed(
                    f"shard {spec['stem']} (segment {spec['segment']}) failed on Ray: {cause!r}"
                ) from exc
            except ray.exceptions.RayError as exc:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise ShardFailed(
                    f"the Ray worker running shard {spec['stem']} (segment {spec['segment']}) died: {exc}"
                ) from exc
    finally:
        if started:
            ray.shutdown()
