"""End to end: `anemone export serve` as a real process (curl-style HTTP, graceful SIGTERM), a bounded load test
with malformed requests mixed in, and anemone-evaluator's endpoint target scoring the served embedded model the
same as its local target."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from anemone_export.server.backends import build_engine
from anemone_export.server.config import ServeConfig
from anemone_export.server.serve_cli import ServerThread


def test_serve_command_answers_and_stops_gracefully(tiny_dir):
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "anemone_core.cli", "export", "serve", "--model", str(tiny_dir),
                             "--port", "0", "--threads", "1", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        url = json.loads(line)["url"]
        assert url.startswith("http://127.0.0.1:")
        r = httpx.post(f"{url}/completions", json={"prompt": "Hello", "max_tokens": 4}, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 4
        assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200
        # Graceful shutdown: a request in flight when SIGTERM arrives is still answered.
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, f"{url}/completions", json={"prompt": "Hi", "max_tokens": 200,
                                                                          "temperature": 0}, timeout=60)
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            assert pending.result().status_code == 200
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after draining
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_load_16_clients_with_malformed_requests(tiny_dir):
    cfg = ServeConfig(model=str(tiny_dir), max_tokens_limit=32)
    engine = build_engine(cfg)
    bad_bodies = [b"{oops", b'{"prompt": "x", "max_tokens": 99999}', b'{"messages": "nope"}', b'{"prompt": []}']
    stop_at = time.monotonic() + 15  # bounded in time

    def client(i: int) -> list[tuple[bool, int]]:
        rng, seen = random.Random(i), []
        with httpx.Client(timeout=60) as c:
            while time.monotonic() < stop_at:
                if rng.random() < 0.25:
                    r = c.post(f"{url}/v1/completions", content=rng.choice(bad_bodies))
                    seen.append((False, r.status_code))
                elif rng.random() < 0.5:
                    r = c.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": f"hi {i}"}],
                                                                   "max_tokens": 8})
                    seen.append((True, r.status_code))
                else:
                    r = c.post(f"{url}/v1/completions", json={"prompt": f"Count {i}:", "max_tokens": 8})
                    seen.append((True, r.status_code))
        return seen

    with ServerThread(engine, cfg) as url, ThreadPoolExecutor(16) as pool:
        results = [x for seen in pool.map(client, range(16)) for x in seen]
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        metrics = httpx.get(f"{url}/metrics").text
    valid = [s for ok, s in results if ok]
    bad = [s for ok, s in results if not ok]
    assert valid and bad and all(s == 200 for s in valid) and all(400 <= s < 500 for s in bad)
    assert "code=\"5" not in metrics
    assert engine.metrics.batch.count < len(valid)  # concurrent requests shared batches


def test_evaluator_endpoint_scores_like_local(tmp_path):
    ev = pytest.importorskip("anemone_evaluator.endpoint_target")
    local_mod = pytest.importorskip("anemone_evaluator.local_target")
    reqs_mod = pytest.importorskip("anemone_evaluator.requests")
    from anemone_core.models import default_model_dir

    cfg = ServeConfig(threads=1)
    engine = build_engine(cfg)
    loglik = [reqs_mod.LoglikRequest("The capital of France is", c) for c in (" Paris", " London", " Rome")]
    loglik += [reqs_mod.LoglikRequest("12 + 34 =", c) for c in (" 46", " 47")]
    gen = [reqs_mod.GenRequest("The capital of France is", until=("\n",), max_tokens=12),
           reqs_mod.GenRequest("What is the capital of France?", max_tokens=16, chat=True)]
    local = local_mod.LocalTarget(default_model_dir(), batch_size=4)
    with ServerThread(engine, cfg) as url:
        endpoint = ev.EndpointTarget(f"{url}/v1", concurrency=4)
        got_ll, got_gen = endpoint.loglikelihood(loglik), endpoint.generate(gen)
    want_ll, want_gen = local.loglikelihood(loglik), local.generate(gen)
    for (a, ga), (b, gb) in zip(got_ll, want_ll, strict=True):
        assert a == pytest.approx(b, abs=1e-3) and ga == gb
    assert got_gen == want_gen
