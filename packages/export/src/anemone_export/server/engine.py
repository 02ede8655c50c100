"""Generation engines behind one interface. `BatchingEngine` runs any KV-step function (torch eager or ONNX
Runtime) in a worker thread with continuous batching: waiting requests are left-padded, prefilled together and
merged into the running batch between two decode steps; finished rows leave the batch at once.

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
from anemone_export.server.prefill import prefill


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
    """Continuous batching over a KV-step function: `step(ids, mask, pos, *cache, all_logits) -> (logits, *cache)`."""

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
        """Continuous batching: between two decode steps, waiting requests are prefilled and join the running
        batch (up to `max_batch_size` rows); finished rows leave at once. An idle engine waits `batch_wait_ms`
        after the first request so that a burst is prefilled together."""
        if self.threads:
            torch.set_num_threads(self.threads)
        batch = _Batch()
        stopping = False
        while not (stopping and not batch.slots):
            new: list[GenRequest] = []
            if not batch.slots and not stopping:
                first = self._queue.get()
                if first is None:
                    break
                new, deadline = [first], time.monotonic() + self.batch_wait_s
                stopping = self._collect(new, deadline)
            elif not stopping:
                stopping = self._collect(new, None, room=self.max_batch_size - len(batch.slots))
            try:
                if new := [r for r in new if not r.cancelled]:
                    self._admit(batch, new)
                if batch.slots:
                    self._decode_step(batch)
            except Exception as exc:  # answer every request in flight; the engine stays up for the next
                err = f"{type(exc).__name__}: {exc}"
                running = [s.row.req for s in batch.slots]
                for r in running + [r for r in new if not any(r is q for q in running)]:  # not yet merged
                    r.sink(Finished("error", "", len(r.prompt_ids), 0, error=err))
                batch = _Batch()
        self._alive = False

    def _collect(self, into: list[GenRequest], deadline: float | None, room: int | None = None) -> bool:
        """Move waiting requests into `into` (until the deadline, or only those already queued); True on stop."""
        limit = self.max_batch_size if room is None else room
        while len(into) < limit:
            try:
                nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic())) if deadline is not None \
                    else self._queue.get_nowait()
            except queue.Empty:
                return False
            if nxt is None:
                return True
            into.append(nxt)
        return False

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
    def _admit(self, batch: _Batch, reqs: list[GenRequest]) -> None:
        """Prefill new requests together (shared prompt prefixes once) and merge their rows into the running batch."""
        lens = [len(r.prompt_ids) for r in reqs]
        self.metrics.batch_run(len(reqs), sum(lens))
        pre = prefill(self.step, self.layout, [r.prompt_ids for r in reqs], any(r.echo_logprobs for r in reqs))
        slots, keep = [], []
        for b, r in enumerate(reqs):
            lp = self._prompt_logprobs(pre.logits[b], r.prompt_ids, r.logprobs or 0) \
                if r.echo_logprobs and pre.logits is not None else None
            slot = _Slot(_Row(r, self.tokenizer, self.eos), lens[b], lp)
            if r.max_tokens == 0:  # scoring only: answered after the prefill
                slot.finish("length")
            else:
                slots.append(slot)
                keep.append(b)
        if keep:
            sel = torch.tensor(keep)
            batch.merge(slots, [c.index_select(0, sel) for c in pre.cache], pre.mask.index_select(0, sel),
                        pre.last.index_select(0, sel))

    @torch.no_grad()
    def _decode_step(self, batch: _Batch) -> None:
        """Sample one token for every running row from its pending logits, retire finished rows, run the model."""
        keep, nxt, sampled = [], [], 0
        for j, slot in enumerate(batch.slots):
            row = slot.row
            if row.req.cancelled:
                slot.finish("cancelled")
                continue
            tok = sample(batch.last[j], row)
            info = None
            if row.req.logprobs is not None:
                info = self._info(torch.log_softmax(batch.last[j].float(), -1), tok, row.req.logprobs)
            left = self.max_model_len - slot.prompt_len - len(row.ids) - 1
            reason = row.push(tok, info, left)
            sampled += 1
            if reason:
                slot.finish(reason)
            else:
                keep.append(j)
                nxt.append(tok)
        self.metrics.tokens(sampled)
        batch.keep(keep)
        if batch.slots:
            mask = torch.cat([batch.mask, torch.ones(len(keep), 1, dtype=torch.long)], 1)
            logits, *cache = self.step(torch.tensor(nxt)[:, None], mask, positions_from_mask(mask, 1), *batch.cache,
                                       all_logits=False)
            batch.cache, batch.mask, batch.last = cache, mask, logits[:, -1]


@dataclass
class _Slot:
    """A running request: its decoding state, prompt length and (echo) prompt logprobs."""

    row: _Row
    prompt_len: int
    prompt_lp: list[TokenInfo] | None

    def finish(self, reason: str) -> None:
        r = self.row
        r.req.sink(Finished(reason, r.text, self.prompt_len, len(r.ids), self.prompt_lp))


class _Batch:
    """The running rows with their KV cache (B, kv_heads, T, head_dim) per tensor, left-padded mask (B, T) and
    pending last-position logits (B, V). Padding stays on the left, so positions come from the mask."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.slots: list[_Slot] = []
        self.cache: list[torch.Tensor] = []
        self.mask = torch.zeros(0, 0, dtype=torch.long)
        self.last = torch.zeros(0, 0)

    def merge(self, slots: list[_Slot], cache: list[torch.Tensor], mask: torch.Tensor, last: torch.Tensor) -> None:
        if not self.slots:
            self.slots, self.cache, self.mask, self.last = slots, cache, mask, last
            return
        width = max(self.mask.shape[1], mask.shape[1])
        self.cache = [torch.cat([_left_pad(a, width, 2), _left_pad(b, width, 2)]) for a, b in zip(self.cache, cache,
                                                                                                strict=True)]
        self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(mask, width, 1)])
        self.last = torch.cat([self.last, last])
        self.slots = self.slots + slots

    def keep(self, rows: list[int]) -> None:
        """Keep these rows; drop columns that are padding in every remaining row."""
        if len(rows) == len(self.slots):
            return
        self.slots = [self.slots[j] for j in rows]
        if not rows:
            self.clear()
            return
        sel = torch.tensor(rows)
        mask = self.mask.index_select(0, sel)
        start = int(mask.any(0).long().argmax())  # first column any remaining row attends to
        self.mask = mask[:, start:]
        self.cache = [c.index_select(0, sel)[:, :, start:] for c in self.cache]
        self.last = self.last.index_select(0, sel)


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Zeros on the left of `dim` up to `width` columns."""
    extra = width - t.shape[dim]
    if extra == 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t.new_zeros(shape), t], dim)


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
