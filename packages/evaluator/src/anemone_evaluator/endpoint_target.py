"""An OpenAI-compatible HTTP endpoint as an evaluation target (vLLM, anemone-export's server, OpenAI itself).

- loglikelihood: `/completions` with `echo=true, logprobs=1`: the prompt's own token log-probabilities,
  summed over the tokens that start at or after the context's end (the continuation).
- loglikelihood_rolling: the same over the whole text; the first token has no log-probability from an API
  (nothing conditions it), so it is left out, unlike the local target which conditions it on BOS.
- generate: `/completions` (plain) or `/chat/completions` (chat), temperature 0, stop strings.
Up to `batch_size` prompts go in one `/completions` request (the API takes a list; a server that refuses
a list gets one prompt per request from then on); chat requests carry one conversation each. Requests run
`concurrency` at a time over kept-alive connections; 429 and 5xx answers, timeouts and connection errors are
retried with exponential backoff (honouring Retry-After) up to `max_retries` times, then fail with a clear
error.
"""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from anemone_core.errors import AnemoneError
from anemone_evaluator.requests import GenRequest, LoglikRequest, RollingRequest, chat_messages

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class EndpointHTTPError(AnemoneError):
    """The endpoint answered a status that retrying cannot fix (4xx other than 408/409/429)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class EndpointTarget:
    def __init__(self, url: str, model: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout_s: float = 300.0, max_retries: int = 5, backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, batch_size: int = 8) -> None:
        import httpx

        if not url.startswith(("http://", "https://")):
            raise AnemoneError(f"--endpoint {url!r} is not an http(s) URL: give e.g. http://127.0.0.1:8000/v1")
        base = url.rstrip("/")
        for suffix in ("/chat/completions", "/completions"):
            base = base.removesuffix(suffix)
        self.base = base
        self.concurrency, self.timeout_s, self.batch_size = concurrency, timeout_s, batch_size
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        key = os.environ.get(api_key_env, "")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.client = httpx.Client(timeout=timeout_s, limits=limits)  # one pool: connections are reused
        self.stats = {"requests": 0, "retries": 0}
        self._lock = threading.Lock()
        self.model = model or self._first_model()
        self.name = self.model

    def fingerprint(self) -> str:
        return f"{self.base}|{self.model}"

    def describe(self) -> dict[str, Any]:
        return {"kind": "endpoint", "url": self.base, "model": self.model, "concurrency": self.concurrency,
                "batch_size": self.batch_size,
                "timeout_s": self.timeout_s, "max_retries": self.max_retries, "fingerprint": self.fingerprint()}

    # -- HTTP with retries ------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        url = f"{self.base}{path}"
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random())
            try:
                with self._lock:
                    self.stats["requests"] += 1
                resp = self.client.request(method, url, json=body, headers=self.headers)
            except httpx.TimeoutException:
                last = f"no answer within timeout_s={self.timeout_s}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    try:
                        return resp.json()
                    except ValueError:
                        raise AnemoneError(f"endpoint {url} answered 200 with a body that is not JSON "
                                           f"({resp.text[:120]!r}): is --endpoint an OpenAI-compatible API?") from None
                if resp.status_code not in RETRY_STATUS:
                    raise EndpointHTTPError(f"endpoint {url} answered HTTP {resp.status_code}: {resp.text[:300]}: "
                                            "check --endpoint, --endpoint-model and the API key variable",
                                            resp.status_code)
                last = f"HTTP {resp.status_code}"
                retry_after = resp.headers.get("retry-after", "")
                if retry_after.replace(".", "", 1).isdigit():
                    wait = min(self.max_backoff_s, float(retry_after))
            if attempt < self.max_retries:
                with self._lock:
                    self.stats["retries"] += 1
                time.sleep(wait)
        raise AnemoneError(f"endpoint {url} failed after {self.max_retries + 1} attempts (last: {last}): check that "
                           "the server is running and reachable, or raise endpoint_opts.max_retries / endpoint_opts.timeout_s")

    def _first_model(self) -> str:
        data = self._request("GET", "/models").get("data") or []
        if not data:
            raise AnemoneError(f"endpoint {self.base}/models lists no model: pass --endpoint-model NAME")
        return str(data[0]["id"])

    def _map(self, fn, items: list[Any]) -> list[Any]:
        if self.concurrency <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(fn, items))

    def _batched(self, one_request, items: list[Any]) -> list[Any]:
        """Answers for `items`, `batch_size` per request (`one_request(list) -> list`), concurrently."""
        groups = [items[s: s + self.batch_size] for s in range(0, len(items), self.batch_size)]
        return [a for answers in self._map(one_request, groups) for a in answers]

    def _completions(self, body: dict[str, Any], prompts: list[str]) -> list[dict[str, Any]]:
        """One /completions request for a list of prompts; its choices in prompt order."""
        if len(prompts) > 1 and self.batch_size > 1:
            try:
                choices = self._request("POST", "/completions", {**body, "prompt": prompts})["choices"]
            except EndpointHTTPError as exc:
                if exc.status not in (400, 422):
                    raise
                self.batch_size = 1  # this server takes one prompt per request: say so once, then comply
                return [c for p in prompts for c in self._completions(body, [p])]
            if len(choices) != len(prompts):
                raise AnemoneError(f"endpoint {self.base}/completions answered {len(choices)} choices for "
                                   f"{len(prompts)} prompts: set endpoint_opts.batch_size=1")
            return sorted(choices, key=lambda c: c.get("index", 0))
        return [self._request("POST", "/completions", {**body, "prompt": p})["choices"][0] for p in prompts]

    def _echo_logprobs(self, texts: list[str]) -> list[dict[str, Any]]:
        body = {"model": self.model, "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0.0}
        out = []
        for choice in self._completions(body, texts):
            lp = choice.get("logprobs")
            if not lp or "token_logprobs" not in lp:
                raise AnemoneError(f"endpoint {self.base} returned no prompt logprobs for echo=true: multiple "
                                   "choice and perplexity need a server that supports echo+logprobs (e.g. vLLM); "
                                   "use generation tasks")
            out.append(lp)
        return out

    def _loglik_batch(self, reqs: list[LoglikRequest]) -> list[tuple[float, bool]]:
        if any(r.chat for r in reqs):
            raise AnemoneError("chat_template=true with a loglikelihood task on an endpoint: an API cannot score a "
                               "continuation after its own chat template; run with chat_template=false")
        out = []
        for req, lp in zip(reqs, self._echo_logprobs([r.prompt + r.continuation for r in reqs]), strict=True):
            ctx_len, end = len(req.prompt), len(req.prompt) + len(req.continuation)
            total, greedy = 0.0, True
            tops = lp.get("top_logprobs") or [None] * len(lp["tokens"])
            for tok, logp, off, top in zip(lp["tokens"], lp["token_logprobs"], lp["text_offset"], tops, strict=True):
                if ctx_len <= off < end and logp is not None:
                    total += logp
                    if top:
                        greedy &= max(top, key=top.get) == tok
            out.append((total, greedy))
        return out

    def _rolling_batch(self, reqs: list[RollingRequest]) -> list[float]:
        out = []
        for req, lp in zip(reqs, self._echo_logprobs([r.text for r in reqs]), strict=True):
            end = len(req.text)
            out.append(float(sum(p for p, off in zip(lp["token_logprobs"], lp["text_offset"], strict=True)
                                 if p is not None and off < end)))
        return out

    def _generate_batch(self, reqs: list[GenRequest]) -> list[str]:
        first = reqs[0]
        stop = [s for s in first.until if s][:4] or None  # the OpenAI API takes at most 4 stop strings
        if first.chat:
            assert len(reqs) == 1, "chat requests are sent one at a time"
            body = {"model": self.model, "messages": chat_messages(first.prompt, first.system),
                    "max_tokens": first.max_tokens, "temperature": 0.0, "stop": stop}
            texts = [self._request("POST", "/chat/completions", body)["choices"][0]["message"]["content"] or ""]
        else:
            body = {"model": self.model, "max_tokens": first.max_tokens, "temperature": 0.0, "stop": stop}
            texts = [c["text"] for c in self._completions(body, [r.prompt for r in reqs])]
        for s in first.until:  # servers differ on stop handling: cut here too, as the local target does
            if s:
                texts = [t.split(s)[0] for t in texts]
        return texts

    def loglikelihood(self, reqs: list[LoglikRequest]) -> list[tuple[float, bool]]:
        return self._batched(self._loglik_batch, reqs)

    def loglikelihood_rolling(self, reqs: list[RollingRequest]) -> list[float]:
        return self._batched(self._rolling_batch, reqs)

    def generate(self, reqs: list[GenRequest]) -> list[str]:
        """Plain requests sharing stop strings and budget go `batch_size` per request; chat ones alone."""
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(reqs):
            groups.setdefault((r.until, r.max_tokens, r.chat), []).append(i)
        batches = []
        for (_, _, chat), members in groups.items():
            size = 1 if chat else self.batch_size
            batches += [members[s: s + size] for s in range(0, len(members), size)]
        out = [""] * len(reqs)
        answers = self._map(lambda batch: self._generate_batch([reqs[i] for i in batch]), batches)
        for batch, texts in zip(batches, answers, strict=True):
            for i, text in zip(batch, texts, strict=True):
                out[i] = text
        return out

    def close(self) -> None:
        self.client.close()
