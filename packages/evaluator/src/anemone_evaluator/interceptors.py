"""Interceptors between the runner and a target: system prompt, reasoning stripping, request/response
logging and a SQLite request cache (so a killed run resumes without asking the model again).

`InterceptedTarget` has the target's interface; each call rewrites the requests, answers what the cache
holds, sends only the rest to the target, stores the answers (committed per call), logs, and post-processes.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from anemone_evaluator.filters import strip_think
from anemone_evaluator.requests import (
    KIND,
    GenRequest,
    LoglikRequest,
    Request,
    RollingRequest,
    Target,
    request_key,
)


class RequestCache:
    """key -> JSON answer, in one SQLite file; safe to kill at any point (each batch is one transaction)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.execute("CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")
        self.db.commit()

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start: start + 500]
            marks = ",".join("?" * len(chunk))
            for k, v in self.db.execute(f"SELECT key, answer FROM cache WHERE key IN ({marks})", chunk):
                found[k] = json.loads(v)
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO cache VALUES (?, ?)",
                                [(k, json.dumps(v)) for k, v in items.items()])

    def close(self) -> None:
        self.db.close()


class InterceptedTarget:
    def __init__(self, target: Target, system_prompt: str | None = None, strip_reasoning: bool = False,
                 log_path: str | Path | None = None, cache: RequestCache | None = None) -> None:
        self.target, self.system_prompt, self.strip_reasoning = target, system_prompt, strip_reasoning
        self.cache = cache
        self.log = Path(log_path).open("a", encoding="utf-8") if log_path else None
        self.name = target.name
        self.stats = {"cache_hits": 0, "sent": 0}

    def fingerprint(self) -> str:
        return self.target.fingerprint()

    def describe(self) -> dict[str, Any]:
        return self.target.describe()

    def _system(self, req: Request) -> Request:
        if not self.system_prompt or isinstance(req, RollingRequest):
            return req
        if req.chat:
            return dataclasses.replace(req, system=self.system_prompt)
        return dataclasses.replace(req, prompt=f"{self.system_prompt}\n\n{req.prompt}")

    def _call(self, reqs: Sequence[Request], fn: Callable[[list[Any]], list[Any]]) -> list[Any]:
        reqs = [self._system(r) for r in reqs]
        fp = self.target.fingerprint()
        keys = [request_key(r, fp) for r in reqs]
        known = self.cache.get_many(keys) if self.cache else {}
        todo = [i for i, k in enumerate(keys) if k not in known]
        self.stats["cache_hits"] += len(reqs) - len(todo)
        self.stats["sent"] += len(todo)
        t0 = time.perf_counter()
        fresh = fn([reqs[i] for i in todo]) if todo else []
        answers = {keys[i]: a for i, a in zip(todo, fresh, strict=True)}
        if self.cache and answers:
            self.cache.put_many(answers)
        if self.log:
            per = (time.perf_counter() - t0) / max(1, len(todo))
            for i, k in enumerate(keys):
                self.log.write(json.dumps({"kind": KIND[type(reqs[i])], "request": dataclasses.asdict(reqs[i]),
                                           "response": known.get(k, answers.get(k)), "cached": k in known,
                                           "seconds": None if k in known else round(per, 4)}) + "\n")
            self.log.flush()
        return [known[k] if k in known else answers[k] for k in keys]

    def loglikelihood(self, reqs: list[LoglikRequest]) -> list[tuple[float, bool]]:
        return [(float(a[0]), bool(a[1])) for a in self._call(reqs, self.target.loglikelihood)]

    def loglikelihood_rolling(self, reqs: list[RollingRequest]) -> list[float]:
        return [float(a) for a in self._call(reqs, self.target.loglikelihood_rolling)]

    def generate(self, reqs: list[GenRequest]) -> list[str]:
        out = self._call(reqs, self.target.generate)
        return [strip_think(t) for t in out] if self.strip_reasoning else out

    def close(self) -> None:
        if self.log:
            self.log.close()
        if self.cache:
            self.cache.close()
