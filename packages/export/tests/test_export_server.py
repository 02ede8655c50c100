"""The OpenAI-compatible server on a tiny model: the official openai client (completions, chat, streaming),
echo + logprobs against the model's own log-softmax, request validation, API key, metrics, dynamic batching."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import torch

from anemone_export.server.backends import build_engine
from anemone_export.server.config import ServeConfig
from anemone_export.server.engine import GenRequest
from anemone_export.server.serve_cli import ServerThread


@pytest.fixture(scope="module")
def tiny_server(tiny_dir):
    cfg = ServeConfig(model=str(tiny_dir), api_key="sekret", max_tokens_limit=64)
    engine = build_engine(cfg)
    with ServerThread(engine, cfg) as url:
        yield url, engine
    assert not engine.healthy()  # shut down with the server


def _client(url):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key="sekret", max_retries=0)


def test_openai_client_completions_chat_stream(tiny_server):
    url, engine = tiny_server
    client = _client(url)
    assert [m.id for m in client.models.list().data] == [engine.name]
    r = client.completions.create(model=engine.name, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert r.usage.completion_tokens <= 6 and r.choices[0].finish_reason in ("stop", "length")
    chat = client.chat.completions.create(model=engine.name, messages=[{"role": "user", "content": "Hello"}],
                                          max_tokens=8, temperature=0)
    streamed = client.chat.completions.create(model=engine.name, messages=[{"role": "user", "content": "Hello"}],
                                              max_tokens=8, temperature=0, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == chat.choices[0].message.content  # streaming reassembles the same greedy answer


def test_greedy_matches_transformers_generate(tiny_server, tiny_source):
    url, engine = tiny_server
    ids = tiny_source.tokenizer("The quick brown fox")["input_ids"]
    with torch.no_grad():
        ref = tiny_source.model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False,
                                         eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
    r = _client(url).completions.create(model=engine.name, prompt=ids, max_tokens=10, temperature=0)
    assert r.choices[0].text == tiny_source.tokenizer.decode([t for t in ref if t != 2][: r.usage.completion_tokens],
                                                             skip_special_tokens=True)


def test_echo_logprobs_equal_log_softmax(tiny_server, tiny_source):
    url, engine = tiny_server
    text = "Paris is the capital of France."
    r = _client(url).completions.create(model=engine.name, prompt=text, max_tokens=0, echo=True, logprobs=1)
    lp = r.choices[0].logprobs
    ids = tiny_source.tokenizer(text)["input_ids"]
    with torch.no_grad():
        ref = torch.log_softmax(tiny_source.model(torch.tensor([ids])).logits[0, :-1], -1)
    want = [ref[j, t].item() for j, t in enumerate(ids[1:])]
    assert lp.token_logprobs[0] is None and r.choices[0].text == text
    assert lp.token_logprobs[1:] == pytest.approx(want, abs=1e-4)
    assert "".join(lp.tokens) == text and lp.text_offset == sorted(lp.text_offset)


def test_validation_errors_are_4xx(tiny_server):
    url, engine = tiny_server
    h = {"Authorization": "Bearer sekret"}
    cases = [
        (b"{not json", 400), (b"[1, 2]", 400), (b'{"prompt": "x", "max_tokens": -1}', 400),
        (b'{"prompt": "x", "max_tokens": 65}', 400), (b'{"prompt": "x", "temperature": 9}', 400),
        (b'{"prompt": "x", "model": "gpt-9"}', 404), (b'{"prompt": [999999]}', 400), (b'{"prompt": ""}', 400),
        (b'{"max_tokens": 3}', 400), (b'{"prompt": "' + b"word " * 400 + b'"}', 400),
    ]
    for body, status in cases:
        r = httpx.post(f"{url}/v1/completions", content=body, headers=h)
        assert r.status_code == status, (body[:40], r.text)
        assert "message" in r.json()["error"]
    assert httpx.post(f"{url}/v1/chat/completions", json={"messages": []}, headers=h).status_code == 400
    assert httpx.post(f"{url}/v1/completions", json={"prompt": "x"}).status_code == 401
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    metrics = httpx.get(f"{url}/metrics").text
    assert 'anemone_requests_total{route="/v1/completions",code="400"}' in metrics
    assert "anemone_batch_size_bucket" in metrics


def test_concurrent_requests_are_batched_and_equal_to_single(tiny_source):
    """Left-padded batches decode exactly what each prompt decodes alone (greedy)."""
    from anemone_export.kv_model import KVLayout
    from anemone_export.server.engine import BatchingEngine, torch_step

    step, layout = torch_step(tiny_source.model)
    assert isinstance(layout, KVLayout)
    tok = tiny_source.tokenizer
    prompts = ["The quick brown fox", "12 + 34 =", "Hello, world! Large language models are", "What"]

    async def run(engine):
        async def one(p):
            out = []
            async for ev in engine.generate(GenRequest(tok(p)["input_ids"], 12, temperature=0.0)):
                out.append(ev)
            return out[-1].text
        return await asyncio.gather(*(one(p) for p in prompts))

    batched = BatchingEngine("b", step, layout, tok, max_model_len=256, eos_ids=set(), max_batch_size=8,
                             batch_wait_ms=200)
    single = BatchingEngine("s", step, layout, tok, max_model_len=256, eos_ids=set(), max_batch_size=1)
    try:
        assert asyncio.run(run(batched)) == asyncio.run(run(single))
        assert batched.metrics.batch.sum == len(prompts)
        assert batched.metrics.batch.count == 1  # all four prompts went through one batch
    finally:
        batched.close()
        single.close()


def test_requests_join_a_running_batch_and_decode_as_alone(tiny_source):
    """Continuous batching: requests arriving while a long one decodes are prefilled, merged into its batch (a
    longer prompt pads the running cache, a shorter one pads itself) and finish first, each with the text it
    decodes alone."""
    from anemone_export.server.engine import BatchingEngine, Finished, torch_step

    step, layout = torch_step(tiny_source.model)
    tok = tiny_source.tokenizer
    long_prompt = "Hello, world! Large language models are trained on a great deal of text, and then"
    asks = [("Hi", 40), (long_prompt, 10), ("7", 6)]

    async def run(engine, staggered):
        finished: list[str] = []

        async def one(p, n, started=None):
            text = ""
            async for ev in engine.generate(GenRequest(tok(p)["input_ids"], n, temperature=0.0)):
                if started is not None and not started.is_set():
                    started.set()
                if isinstance(ev, Finished):
                    text = ev.text
            finished.append(p)
            return text

        started = asyncio.Event()
        first = asyncio.create_task(one(*asks[0], started))
        if staggered:
            await started.wait()  # the first request is decoding before the others arrive
        rest = await asyncio.gather(*(one(p, n) for p, n in asks[1:]))
        return [await first, *rest], finished

    cont = BatchingEngine("c", step, layout, tok, max_model_len=256, eos_ids=set(), max_batch_size=8, batch_wait_ms=0)
    single = BatchingEngine("s", step, layout, tok, max_model_len=256, eos_ids=set(), max_batch_size=1)
    try:
        texts, order = asyncio.run(run(cont, staggered=True))
        alone, _ = asyncio.run(run(single, staggered=False))
        assert texts == alone
        assert order[-1] == "Hi"  # the 40-token request finished last: the others decoded beside it
        # each prompt was prefilled exactly once: the first alone, the two that joined together or one step apart
        # (whether the second arrives before the engine thread admits the first is up to the scheduler)
        assert cont.metrics.batch.sum == 3
        assert cont.metrics.batch.count in (2, 3)
    finally:
        cont.close()
        single.close()


def test_stop_strings_and_seeded_sampling(tiny_server):
    url, engine = tiny_server
    client = _client(url)
    a = client.completions.create(model=engine.name, prompt="The", max_tokens=12, temperature=1.0, seed=7)
    b = client.completions.create(model=engine.name, prompt="The", max_tokens=12, temperature=1.0, seed=7)
    assert a.choices[0].text == b.choices[0].text
    full = client.completions.create(model=engine.name, prompt="The", max_tokens=12, temperature=0).choices[0].text
    if len(full) > 3:
        stop = full[2:4]
        cut = client.completions.create(model=engine.name, prompt="The", max_tokens=12, temperature=0, stop=[stop])
        assert cut.choices[0].text == full[: full.find(stop)] and cut.choices[0].finish_reason == "stop"


def test_onnx_backend_serves_the_same_greedy_text(tiny_dir, tmp_path, tiny_source):
    from anemone_export.onnx_export import export_onnx

    export_onnx(tiny_source, tmp_path / "onnx")
    answers = []
    for cfg in (ServeConfig(model=str(tiny_dir)), ServeConfig(model=str(tmp_path / "onnx"), backend="onnx")):
        engine = build_engine(cfg)
        with ServerThread(engine, cfg) as url:
            r = httpx.post(f"{url}/v1/completions", json={"prompt": "The quick brown fox", "max_tokens": 12,
                                                          "temperature": 0, "logprobs": 1}, timeout=60).json()
            answers.append((r["choices"][0]["text"], r["choices"][0]["logprobs"]["token_logprobs"]))
    assert answers[0][0] == answers[1][0]
    assert answers[0][1] == pytest.approx(answers[1][1], abs=1e-4)


@pytest.mark.gpu
def test_vllm_backend_answers(tiny_dir):
    from anemone_core.testing import has_gpu

    if not has_gpu():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("vllm")
    cfg = ServeConfig(model=str(tiny_dir), backend="vllm")
    engine = build_engine(cfg)
    with ServerThread(engine, cfg) as url:
        r = httpx.post(f"{url}/v1/completions", json={"prompt": "Hello", "max_tokens": 4, "temperature": 0}, timeout=120)
        assert r.status_code == 200


def test_completion_lists_an_eos_logprob(tiny_dir, tiny_source):
    """echo + max_tokens=1 (how lm-eval scores through an endpoint): when the greedy token ends the sequence it is
    not shown, but it is the last logprob entry, so dropping that entry leaves exactly the prompt's tokens."""
    text = "Paris is the capital of"
    ids = tiny_source.tokenizer(text)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(tiny_source.model(torch.tensor([ids])).logits[0, -1], -1)
    greedy = int(logp.argmax())
    cfg = ServeConfig(model=str(tiny_dir))
    engine = build_engine(cfg)
    engine.eos = {greedy}  # make the model's greedy next token its end-of-sequence token
    with ServerThread(engine, cfg) as url:
        r = httpx.post(f"{url}/v1/completions", json={"prompt": text, "max_tokens": 1, "echo": True, "logprobs": 1,
                                                      "temperature": 0}, timeout=60).json()
        chat = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "logprobs": True}).json()
    choice = r["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["text"] == text and r["usage"]["completion_tokens"] == 0
    lp = choice["logprobs"]
    assert len(lp["token_logprobs"]) == len(ids) + 1
    assert lp["token_logprobs"][-1] == pytest.approx(logp[greedy].item(), abs=1e-4)
    assert lp["text_offset"][-1] == len(text)
    # chat lists only the tokens it shows and counts (an EOS ends the answer without an entry)
    assert len(chat["choices"][0]["logprobs"]["content"]) == chat["usage"]["completion_tokens"]
