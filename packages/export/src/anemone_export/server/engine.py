"""Generation engines behind one interface. `BatchingEngine` runs any KV-step function (torch eager or ONNX
Runtime) in a worker thread with dynamic batching: requests that arrive within `batch_wait_ms` of each other are
left-padded into one batch, prefilled together and decoded together; finished rows leave the batch at once.

    engine.generate(GenRequest) -> async iterator of Delta ... then one Finished
"""

from __future__ import annotations

import asyncio
import codecs
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from anemone_export.kv_model import KVLayout, positions_from_mask
from anemone_export.server.metrics import ServerMetrics


@dataclass
class TokenInfo:
    id: int
    text: str
    logprob: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)  # the k most likely tokens at this position


@dataclass
class Delta:
    text: str
    tokens: list[TokenInfo]


@dataclass
class Finished:
    reason: str  # "stop" | "length" | "error"
    text: str
    prompt_tokens: int
    completion_tokens: int
    prompt_logprobs: list[TokenInfo] | None = None  # echo: every prompt token (the first has no logprob)
    error: str | None = None


@dataclass
class GenRequest:
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stops: list[str] = field(default_factory=list)
    logprobs: int | None = None  # None: no logprobs; k >= 0: chosen token's logprob plus the top k
    echo_logprobs: bool = False  # also score the prompt's own tokens (completions echo=true with logprobs)
    seed: int | None = None
    sink: Callable[[Delta | Finished], None] = lambda ev: None
    cancelled: bool = False
    eos_logprob: bool = False  # list an end-of-sequence token among the logprobs (completions, as vLLM does)


class Engine(Protocol):
    """What the app needs from a backend (torch, ONNX Runtime, vLLM)."""

    name: str
    tokenizer: Any
    max_model_len: int
    metrics: ServerMetrics

    def generate(self, req: GenRequest) -> AsyncIterator[Delta | Finished]: ...
    def queue_depth(self) -> int: ...
    def healthy(self) -> bool: ...
    def close(self) -> None: ...


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table that byte-level BPE vocabularies are written in."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


class TokenTexts:
    """Exact byte pieces of tokens (byte-level BPE aware), so echoed offsets add up to the decoded text."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._byte_of = {c: b for b, c in _bytes_to_unicode().items()}
        self._cache: dict[int, bytes] = {}

    def piece(self, token_id: int) -> bytes:
        got = self._cache.get(token_id)
        if got is None:
            tok = self.tokenizer.convert_ids_to_tokens(token_id)
            if tok is not None and all(c in self._byte_of for c in tok):
                got = bytes(self._byte_of[c] for c in tok)
            else:
                got = self.tokenizer.decode([token_id]).encode("utf-8")
            self._cache[token_id] = got
        return got

    def text(self, token_id: int) -> str:
        return self.piece(token_id).decode("utf-8", errors="replace")

    def offsets(self, ids: list[int]) -> list[int]:
        """Character offset at which each token starts in the decoded text."""
        dec, pos, out = codecs.getincrementaldecoder("utf-8")(errors="replace"), 0, []
        for i in ids:
            out.append(pos)
            pos += len(dec.decode(self.piece(i)))
        return out


class _Row:
    """Per-request decoding state: generated ids, text emitted so far, stop handling."""

    def __init__(self, req: GenRequest, tokenizer, eos: set[int]) -> None:
        self.req, self.tokenizer, self.eos = req, tokenizer, eos
        self.ids: list[int] = []
        self.emitted = 0
        self.text = ""
        self.generator = torch.Generator().manual_seed(req.seed) if req.seed is not None else None
        self.hold = max((len(s) for s in req.stops), default=1) - 1  # chars a stop string may still complete

    def push(self, tok: int, info: TokenInfo | None, context_left: int) -> str | None:
        """Add one token; emit a Delta; return the finish reason or None."""
        reason = None
        if tok in self.eos:
            # The end-of-sequence token is neither shown nor counted. /v1/completions still lists its logprob, as
            # vLLM does: clients that score `echo` + `max_tokens=1` (lm-eval) drop the last entry as the generated
            # token, and would drop the answer's last token instead if an EOS were left out.
            reason = "stop"
            info = info if self.req.eos_logprob else None
        else:
            self.ids.append(tok)
            self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            for s in self.req.stops:
                cut = self.text.find(s)
                if cut >= 0:
                    self.text, reason = self.text[:cut], "stop"
            if reason is None and (len(self.ids) >= self.req.max_tokens or context_left <= 0):
                reason = "length"
        end = len(self.text) if reason else max(self.emitted, len(self.text) - self.hold)
        if not reason and self.text.endswith("\ufffd"):
            end = min(end, len(self.text) - 1)  # an incomplete UTF-8 character: wait for its next byte
        delta = self.text[self.emitted:end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        if delta or info is not None:
            self.req.sink(Delta(delta, [info] if info is not None else []))
        return reason


def sample(logits: torch.Tensor, row: _Row) -> int:
    """One token from (V,) logits with the row's temperature / top-p / seed (temperature 0 is greedy)."""
    req = row.req
    if req.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / req.temperature, -1)
    if req.top_p < 1.0:
        sorted_p, idx = probs.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < req.top_p  # always keeps the most likely token
        probs = torch.zeros_like(probs).scatter(0, idx[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=row.generator))


class BatchingEngine:
    """Dynamic batching over a KV-step function: `step(ids, mask, pos, *cache, all_logits) -> (logits, *cache)`."""

    def __init__(self, name: str, step: Callable[..., tuple], layout: KVLayout, tokenizer, *, max_model_len: int,
                 eos_ids: set[int], max_batch_size: int = 16, batch_wait_ms: float = 10.0, threads: int | None = None,
                 metrics: ServerMetrics | None = None) -> None:
        self.name, self.step, self.layout, self.tokenizer = name, step, layout, tokenizer
        self.max_model_len, self.eos = max_model_len, eos_ids
        self.max_batch_size, self.batch_wait_s, self.threads = max_batch_size, batch_wait_ms / 1000, threads
        self.metrics = metrics or ServerMetrics()
        self.texts = TokenTexts(tokenizer)
        self._queue: queue.Queue[GenRequest | None] = queue.Queue()
        self._alive = True
        self._thread = threading.Thread(target=self._loop, name=f"anemone-{name}-engine", daemon=True)
        self._thread.start()

    # -- the async side -------------------------------------------------------------------------------------
    async def generate(self, req: GenRequest) -> AsyncIterator[Delta | Finished]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Delta | Finished] = asyncio.Queue()
        req.sink = lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev)
        self._queue.put(req)
        try:
            while True:
                ev = await events.get()
                yield ev
                if isinstance(ev, Finished):
                    return
        finally:
            req.cancelled = True  # a client that went away frees its batch row at the next step

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def healthy(self) -> bool:
        return self._alive and self._thread.is_alive()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    # -- the worker thread ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch, deadline = [first], time.monotonic() + self.batch_wait_s
            while len(batch) < self.max_batch_size:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(nxt)
            try:
                self.run_batch([r for r in batch if not r.cancelled])
            except Exception as exc:  # answer every request of the batch; the engine stays up for the next
                for r in batch:
                    r.sink(Finished("error", "", len(r.prompt_ids), 0, error=f"{type(exc).__name__}: {exc}"))
        self._alive = False

    def _info(self, logprobs: torch.Tensor, tok: int, k: int) -> TokenInfo:
        top = []
        if k > 0:
            vals, idx = logprobs.topk(k)
            top = [(self.texts.text(int(i)), float(v)) for v, i in zip(vals, idx, strict=True)]
        return TokenInfo(tok, self.texts.text(tok), float(logprobs[tok]), top)

    def _prompt_logprobs(self, logits: torch.Tensor, ids: list[int], k: int) -> list[TokenInfo]:
        """(T, V) prefill logits of one row (padding removed) -> each prompt token's logprob."""
        out = [TokenInfo(ids[0], self.texts.text(ids[0]))]
        logp = torch.log_softmax(logits[:-1].float(), -1)  # position j predicts token j+1
        for j, tok in enumerate(ids[1:]):
            out.append(self._info(logp[j], tok, k))
        return out

    @torch.no_grad()
    def run_batch(self, reqs: list[GenRequest]) -> None:
        if not reqs:
            return
        lens = [len(r.prompt_ids) for r in reqs]
        width = max(lens)
        ids = torch.zeros(len(reqs), width, dtype=torch.long)
        mask = torch.zeros(len(reqs), width, dtype=torch.long)
        for b, r in enumerate(reqs):  # left padding: every row's last token is at column width-1
            ids[b, width - lens[b]:] = torch.tensor(r.prompt_ids)
            mask[b, width - lens[b]:] = 1
        self.metrics.batch_run(len(reqs), sum(lens))
        all_logits = any(r.echo_logprobs for r in reqs)
        logits, *cache = self.step(ids, mask, positions_from_mask(mask, width), *self.layout.empty(len(reqs)),
                                   all_logits=all_logits)  # (B, T or 1, V)
        rows = [_Row(r, self.tokenizer, self.eos) for r in reqs]
        prompt_lp = [self._prompt_logprobs(logits[b, width - lens[b]:], r.prompt_ids, r.logprobs or 0)
                     if r.echo_logprobs else None for b, r in enumerate(reqs)]
        last = logits[:, -1]  # (B, V)
        active = list(range(len(reqs)))
        reasons: dict[int, str] = {b: "length" for b, r in enumerate(reqs) if r.max_tokens == 0}
        n_tokens = 0
        while True:
            keep, nxt = [], []
            for j, b in enumerate(active):
                if b in reasons:
                    continue
                row = rows[b]
                if row.req.cancelled:
                    reasons[b] = "cancelled"
                    continue
                tok = sample(last[j], row)
                info = None
                if row.req.logprobs is not None:
                    info = self._info(torch.log_softmax(last[j].float(), -1), tok, row.req.logprobs)
                left = self.max_model_len - lens[b] - len(row.ids) - 1
                reason = row.push(tok, info, left)
                n_tokens += 1
                if reason:
                    reasons[b] = reason
                else:
                    keep.append(j)
                    nxt.append(tok)
            if not keep:
                break
            sel = torch.tensor(keep)
            active = [active[j] for j in keep]
            cache = [c.index_select(0, sel) for c in cache]
            mask = torch.cat([mask.index_select(0, sel), torch.ones(len(keep), 1, dtype=torch.long)], 1)
            logits, *cache = self.step(torch.tensor(nxt)[:, None], mask, positions_from_mask(mask, 1), *cache,
                                       all_logits=False)
            last = logits[:, -1]
        self.metrics.tokens(n_tokens)
        for b, row in enumerate(rows):
            n_out = len(row.ids)
            row.req.sink(Finished(reasons.get(b, "stop"), row.text, lens[b], n_out, prompt_lp[b]))


def torch_step(model: torch.nn.Module) -> tuple[Callable[..., tuple], KVLayout]:
    """The torch eager step: the same KVStepModel the ONNX exporter traces, keeping only the last logits
    unless a request scores its prompt."""
    from transformers import DynamicCache

    from anemone_export.kv_model import KVStepModel

    wrapped = KVStepModel(model.eval())
    n = wrapped.layout.layers

    def step(ids, mask, pos, *past, all_logits: bool = False):
        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(n)], config=model.config)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                    logits_to_keep=0 if all_logits else 1)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)

    return step, wrapped.layout


def onnx_step(path, threads: int | None = None) -> tuple[Callable[..., tuple], KVLayout]:
    from anemone_export.onnx_export import OnnxStep

    session = OnnxStep(path, threads=threads)

    def step(ids, mask, pos, *past, all_logits: bool = False):
        return session(ids, mask, pos, *past)

    return step, session.layout
