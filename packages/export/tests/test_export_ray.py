"""The same app as 2 Ray Serve replicas (tiny model): both replicas answer, the openai client streams, bad requests
are 4xx; Ray is shut down after."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from anemone_core.errors import AnemoneError
from anemone_export.server.config import ServeConfig
from anemone_export.server.serve_cli import free_port


def test_two_ray_serve_replicas(tiny_dir):
    from anemone_export.server.ray_serve import start_ray_serve, stop_ray_serve

    cfg = ServeConfig(model=str(tiny_dir), replicas=2, threads=1, max_tokens_limit=32)
    port = free_port()
    try:
        try:
            start_ray_serve(cfg, port, num_cpus=2, attempts=1)
        except AnemoneError as exc:  # only the documented raylet start-up timeout of an overloaded machine
            pytest.skip(str(exc))
        url = f"http://127.0.0.1:{port}"
        pids = {httpx.get(f"{url}/health", timeout=30).json()["pid"] for _ in range(30)}
        assert len(pids) == 2  # Ray's proxy spread the requests over both replicas
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda i: httpx.post(f"{url}/v1/completions", timeout=120, json={
                "prompt": f"Hello {i}", "max_tokens": 6}).status_code, range(16)))
        assert codes == [200] * 16
        import openai

        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        chunks = list(client.chat.completions.create(model="llama", messages=[{"role": "user", "content": "hi"}],
                                                     max_tokens=5, temperature=0, stream=True))
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        assert httpx.post(f"{url}/v1/completions", content=b"{bad", timeout=30).status_code == 400
    finally:
        stop_ray_serve()
