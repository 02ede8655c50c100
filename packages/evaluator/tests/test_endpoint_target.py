"""The endpoint target against a real HTTP server on 127.0.0.1 (tests/conftest.py), with failures injected."""

import time

import pytest
import torch

from anemone_core.errors import AnemoneError
from anemone_evaluator.endpoint_target import EndpointTarget
from anemone_evaluator.eval_config import EvalConfig
from anemone_evaluator.local_target import LocalTarget
from anemone_evaluator.requests import GenRequest, LoglikRequest
from anemone_evaluator.runner import evaluate

REQS = [LoglikRequest(f"Question: what is {a} + 3?\nAnswer:", f" {c}") for a in range(3) for c in (a + 3, 17)]


def test_echo_logprobs_match_the_local_model(server, tiny_dir):
    ep = EndpointTarget(server.url, concurrency=4)
    assert ep.model == "tiny"
    got = ep.loglikelihood(REQS)
    ref = LocalTarget(tiny_dir).loglikelihood(REQS)
    torch.testing.assert_close(torch.tensor([g[0] for g in got]), torch.tensor([r[0] for r in ref]),
                               atol=1e-4, rtol=1e-4)
    assert [g[1] for g in got] == [r[1] for r in ref]


@pytest.mark.parametrize("batch_size", [1, 4])
def test_prompts_batched_per_request_give_the_same_answers(server, tiny_dir, batch_size):
    ep = EndpointTarget(server.url, concurrency=2, batch_size=batch_size)
    before = server.posts
    got = ep.loglikelihood(REQS)
    assert server.posts - before == -(-len(REQS) // batch_size)  # ceil: one request per batch of prompts
    ref = LocalTarget(tiny_dir).loglikelihood(REQS)
    torch.testing.assert_close(torch.tensor([g[0] for g in got]), torch.tensor([r[0] for r in ref]),
                               atol=1e-4, rtol=1e-4)
    gens = [GenRequest(f"{a} + {a} =", ("\n",), 4) for a in range(6)]
    assert ep.generate(gens) == LocalTarget(tiny_dir).generate(gens)


def test_server_refusing_lists_gets_one_prompt_per_request(server):
    ep = EndpointTarget(server.url, batch_size=4)
    expected = EndpointTarget(server.url, batch_size=1).loglikelihood(REQS)
    server.refuse_lists = True
    assert ep.loglikelihood(REQS) == expected and ep.batch_size == 1


def test_generation_plain_and_chat(server, tiny_dir):
    ep = EndpointTarget(server.url)
    local = LocalTarget(tiny_dir)
    reqs = [GenRequest("Hello, world! The", (), 5), GenRequest("12 + 34 =", (), 5, chat=True, system="Be brief.")]
    assert ep.generate(reqs) == local.generate(reqs)


def test_429_burst_is_retried_with_backoff(server):
    ep = EndpointTarget(server.url, concurrency=4, max_retries=8, backoff_s=0.01, batch_size=1)
    server.fail_next = 6
    got = ep.loglikelihood(REQS)
    assert len(got) == len(REQS) and ep.stats["retries"] >= 6


def test_slow_answer_times_out_and_is_retried(server):
    ep = EndpointTarget(server.url, timeout_s=0.5, max_retries=2, backoff_s=0.01)
    req = GenRequest("Hello, world! The", (), 4)
    server.slow_once.add(req.prompt)
    server.slow_s = 2.0
    assert ep.generate([req])[0] == EndpointTarget(server.url).generate([req])[0]
    assert ep.stats["retries"] == 1


def test_persistent_5xx_fails_after_bounded_retries(server):
    ep = EndpointTarget(server.url, max_retries=2, backoff_s=0.01)
    server.fail_next, server.fail_status = 100, 503
    with pytest.raises(AnemoneError, match="failed after 3 attempts \\(last: HTTP 503\\)"):
        ep.generate([GenRequest("hi", (), 2)])


def test_unreachable_endpoint_gives_a_clear_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(AnemoneError, match=r"127\.0\.0\.1:\d+/v1/models failed after 3 attempts.*server is running"):
        EndpointTarget(f"http://127.0.0.1:{port}/v1", max_retries=2, backoff_s=0.01, timeout_s=2)
    assert time.perf_counter() - t0 < 30  # bounded, not hanging
    with pytest.raises(AnemoneError, match="not an http"):
        EndpointTarget("127.0.0.1:8000")


def test_killed_run_resumes_from_the_request_cache(server, tmp_path):
    cfg = EvalConfig(endpoint=server.url, tasks=["arith_gen"], limit=40, cache_path=str(tmp_path / "c.sqlite"),
                     endpoint_opts={"concurrency": 4, "max_retries": 0, "batch_size": 1})
    n_requests, chunk = 40, 32  # generation requests are committed to the cache 32 at a time
    server.fail_status = 400  # not retryable: the run dies in its second chunk
    original = server.posts

    def die_after_first_chunk():
        while server.posts - original < chunk:
            time.sleep(0.01)
        server.fail_next = 10_000

    import threading

    threading.Thread(target=die_after_first_chunk, daemon=True).start()
    with pytest.raises(AnemoneError, match="HTTP 400"):
        evaluate(cfg, progress=False)
    server.fail_next = 0
    before = server.posts
    results, records = evaluate(cfg, progress=False)
    sent = server.posts - before
    assert results["requests"]["cache_hits"] >= chunk and sent == n_requests - results["requests"]["cache_hits"]
    assert sent <= n_requests - chunk
    before = server.posts
    again, _ = evaluate(cfg, progress=False)  # a full rerun asks nothing
    assert server.posts == before and again["tasks"]["arith_gen"]["metrics"] == results["tasks"]["arith_gen"]["metrics"]
