"""The OpenAI-compatible FastAPI app: /v1/models, /v1/completions (logprobs, echo), /v1/chat/completions (chat
template, SSE streaming), /health, /metrics. Every bad request is a 4xx in OpenAI's error shape naming the field."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from anemone_export.server.config import ServeConfig
from anemone_export.server.engine import Delta, Engine, Finished, GenRequest, TokenInfo
from anemone_export.server.protocol import ChatCompletionRequest, CompletionRequest

MAX_BODY_BYTES = 4 << 20


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def _error(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status_code=status)


async def _body(request: Request, model_cls: type[BaseModel]) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body of {len(raw)} bytes exceeds {MAX_BODY_BYTES}: send a shorter prompt")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON ({exc}): send a JSON object") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(data).__name__}")
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        raise ApiError(400, f"{field}: {err['msg']} (got {str(err.get('input'))[:60]!r})", param=field) from None


class Server:
    """Request handling around one engine: tokenization, bounds, response shapes."""

    def __init__(self, engine: Engine, cfg: ServeConfig) -> None:
        self.engine, self.cfg = engine, cfg
        self.tok = engine.tokenizer
        self.api_key = cfg.api_key or os.environ.get("ANEMONE_API_KEY") or None

    def check_model(self, name: str | None) -> None:
        if name not in (None, "", self.engine.name):
            raise ApiError(404, f"model {name!r} is not served here: use {self.engine.name!r} (see /v1/models)",
                           param="model", kind="not_found_error")

    def encode(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tok(prompt)["input_ids"]
        else:
            vocab = len(self.tok)
            bad = [i for i in prompt if not 0 <= i < vocab]
            if bad:
                raise ApiError(400, f"prompt token id {bad[0]} is outside the vocabulary [0, {vocab})", param="prompt")
            ids = list(prompt)
        if not ids:
            raise ApiError(400, "prompt is empty: send at least one token", param="prompt")
        return ids

    def budget(self, prompt_len: int, max_tokens: int | None, default: int) -> int:
        limit, ctx = self.cfg.max_tokens_limit, self.engine.max_model_len
        if prompt_len >= ctx:
            raise ApiError(400, f"prompt has {prompt_len} tokens; this model's context length is {ctx}: shorten the "
                           "prompt", param="messages")
        if max_tokens is None:
            return min(default, limit, ctx - prompt_len)
        if max_tokens > limit:
            raise ApiError(400, f"max_tokens={max_tokens} exceeds this server's limit {limit}: ask for at most {limit}",
                           param="max_tokens")
        if prompt_len + max_tokens > ctx:
            raise ApiError(400, f"prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) exceeds the context length "
                           f"{ctx}: ask for at most {ctx - prompt_len} tokens", param="max_tokens")
        return max_tokens

    async def run(self, req: GenRequest) -> tuple[list[Delta], Finished]:
        deltas: list[Delta] = []
        async for ev in self.engine.generate(req):
            if isinstance(ev, Finished):
                if ev.reason == "error":
                    raise ApiError(500, f"the engine failed: {ev.error}", kind="server_error")
                return deltas, ev
            deltas.append(ev)
        raise ApiError(500, "the engine stopped without finishing the request", kind="server_error")

    # -- /v1/completions ------------------------------------------------------------------------------------
    def completion_logprobs(self, prompt_ids: list[int], fin: Finished, tokens: list[TokenInfo], echo_text: str):
        infos = (fin.prompt_logprobs or []) + tokens
        texts = self.engine.texts if hasattr(self.engine, "texts") else None
        offsets = texts.offsets([i.id for i in fin.prompt_logprobs]) if (texts and fin.prompt_logprobs) else []
        pos = len(echo_text)
        for t in tokens:
            offsets.append(pos)
            pos += len(t.text)
        return {"tokens": [i.text for i in infos], "token_logprobs": [i.logprob for i in infos],
                "top_logprobs": [dict(i.top) if i.logprob is not None else None for i in infos],
                "text_offset": offsets}

    async def completions(self, body: CompletionRequest) -> Response:
        self.check_model(body.model)
        prompts = body.prompts()
        encoded = [self.encode(p) for p in prompts]
        reqs = [GenRequest(ids, self.budget(len(ids), body.max_tokens, 16), body.temperature, body.top_p, body.stops(),
                           body.logprobs, body.echo and body.logprobs is not None, body.seed, eos_logprob=True)
                for ids in encoded]
        rid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if body.stream:
            return _sse(self._stream_completions(reqs, rid, created))
        results = await asyncio.gather(*(self.run(r) for r in reqs))
        choices, n_prompt, n_out = [], 0, 0
        for i, ((deltas, fin), prompt, ids) in enumerate(zip(results, prompts, encoded, strict=True)):
            echo_text = (prompt if isinstance(prompt, str) else self.tok.decode(ids)) if body.echo else ""
            tokens = [t for d in deltas for t in d.tokens]
            lp = self.completion_logprobs(ids, fin, tokens, echo_text) if body.logprobs is not None else None
            choices.append({"index": i, "text": echo_text + fin.text, "logprobs": lp, "finish_reason": fin.reason})
            n_prompt, n_out = n_prompt + fin.prompt_tokens, n_out + fin.completion_tokens
        return JSONResponse({"id": rid, "object": "text_completion", "created": created, "model": self.engine.name,
                             "choices": choices, "usage": _usage(n_prompt, n_out)})

    async def _stream_completions(self, reqs: list[GenRequest], rid: str, created: int) -> AsyncIterator[dict]:
        merged: asyncio.Queue[tuple[int, Delta | Finished]] = asyncio.Queue()

        async def pump(i: int, r: GenRequest) -> None:
            async for ev in self.engine.generate(r):
                await merged.put((i, ev))

        tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(reqs)]
        try:
            done = 0
            while done < len(reqs):
                i, ev = await merged.get()
                chunk = {"id": rid, "object": "text_completion", "created": created, "model": self.engine.name}
                if isinstance(ev, Finished):
                    done += 1
                    chunk["choices"] = [{"index": i, "text": "", "logprobs": None, "finish_reason": ev.reason}]
                elif ev.text:
                    chunk["choices"] = [{"index": i, "text": ev.text, "logprobs": None, "finish_reason": None}]
                else:
                    continue
                yield chunk
        finally:
            for t in tasks:
                t.cancel()

    # -- /v1/chat/completions -------------------------------------------------------------------------------
    async def chat(self, body: ChatCompletionRequest) -> Response:
        self.check_model(body.model)
        if not getattr(self.tok, "chat_template", None):
            raise ApiError(400, f"model {self.engine.name!r} has no chat template, so chat requests would be formatted "
                           "wrongly: use /v1/completions, or export the model with its tokenizer's chat template",
                           param="messages")
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:
            ids = list(self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                    return_dict=False))
        except Exception as exc:  # a template may reject e.g. a role order: that is the client's request
            raise ApiError(400, f"the chat template rejected the messages: {exc}", param="messages") from None
        wanted = body.max_completion_tokens or body.max_tokens
        k = (body.top_logprobs or 0) if body.logprobs else None
        req = GenRequest(ids, self.budget(len(ids), wanted, self.cfg.max_tokens_limit), body.temperature, body.top_p,
                         body.stops(), k, False, body.seed)
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            return _sse(self._stream_chat(req, rid, created, usage))
        deltas, fin = await self.run(req)
        lp = {"content": [_chat_lp(t) for d in deltas for t in d.tokens]} if body.logprobs else None
        return JSONResponse({"id": rid, "object": "chat.completion", "created": created, "model": self.engine.name,
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": fin.text},
                                          "logprobs": lp, "finish_reason": fin.reason}],
                             "usage": _usage(fin.prompt_tokens, fin.completion_tokens)})

    async def _stream_chat(self, req: GenRequest, rid: str, created: int, usage: bool) -> AsyncIterator[dict]:
        head = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": self.engine.name}
        yield head | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        async for ev in self.engine.generate(req):
            if isinstance(ev, Finished):
                yield head | {"choices": [{"index": 0, "delta": {}, "finish_reason": ev.reason}]}
                if usage:
                    yield head | {"choices": [], "usage": _usage(ev.prompt_tokens, ev.completion_tokens)}
                return
            if ev.text or ev.tokens:
                lp = {"content": [_chat_lp(t) for t in ev.tokens]} if req.logprobs is not None else None
                yield head | {"choices": [{"index": 0, "delta": {"content": ev.text}, "logprobs": lp,
                                           "finish_reason": None}]}


def _chat_lp(t: TokenInfo) -> dict[str, Any]:
    return {"token": t.text, "logprob": t.logprob, "bytes": list(t.text.encode()),
            "top_logprobs": [{"token": s, "logprob": v, "bytes": list(s.encode())} for s, v in t.top]}


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(chunks: AsyncIterator[dict]) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def create_app(engine: Engine | Callable[[], Engine], cfg: ServeConfig | None = None) -> FastAPI:
    """The app around an engine (or a factory called at startup, as Ray Serve replicas do)."""
    cfg = cfg or ServeConfig()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        eng = engine() if callable(engine) and not hasattr(engine, "generate") else engine
        app.state.server = Server(eng, cfg)  # type: ignore[arg-type]
        yield
        eng.close()  # type: ignore[union-attr]  # after uvicorn has drained in-flight requests

    app = FastAPI(title="Anemone OpenAI-compatible server", lifespan=lifespan)

    def server(request: Request) -> Server:
        return request.app.state.server

    @app.middleware("http")
    async def guard(request: Request, call_next):
        srv: Server = request.app.state.server
        path = request.url.path
        start = time.perf_counter()
        if path.startswith("/v1/") and srv.api_key:
            if request.headers.get("authorization", "") != f"Bearer {srv.api_key}":
                resp: Response = _error(401, "missing or wrong API key: send `Authorization: Bearer <key>`",
                                        kind="authentication_error")
                srv.engine.metrics.request_done(path, 401, time.perf_counter() - start)
                return resp
        srv.engine.metrics.in_flight += 1
        try:
            resp = await call_next(request)
        except ApiError as exc:
            resp = _error(exc.status, exc.message, exc.param, exc.kind)
        finally:
            srv.engine.metrics.in_flight -= 1
        route = path if path in KNOWN_ROUTES else "other"
        srv.engine.metrics.request_done(route, resp.status_code, time.perf_counter() - start)
        return resp

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.param, exc.kind)

    @app.get("/health")
    async def health(request: Request) -> Response:
        srv = server(request)
        ok = srv.engine.healthy()
        return JSONResponse({"status": "ok" if ok else "engine down", "model": srv.engine.name, "pid": os.getpid(),
                             "queue_depth": srv.engine.queue_depth()}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        srv = server(request)
        return PlainTextResponse(srv.engine.metrics.render(srv.engine.queue_depth()),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        srv = server(request)
        return JSONResponse({"object": "list", "data": [{"id": srv.engine.name, "object": "model", "created": 0,
                                                         "owned_by": "anemone", "max_model_len": srv.engine.max_model_len}]})

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await server(request).completions(await _body(request, CompletionRequest))

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await server(request).chat(await _body(request, ChatCompletionRequest))

    return app


KNOWN_ROUTES = {"/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions"}
