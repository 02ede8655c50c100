"""A local Hugging Face causal LM as an evaluation target: batched, padding-independent, prefix-cached.

Tokenization follows lm-evaluation-harness exactly (context + continuation encoded together, then split;
trailing context spaces move to the continuation; an empty context becomes the BOS token), so scores agree
sample by sample. What differs is the arithmetic: requests sharing a context (the choices of one question)
are packed into one row that holds the context once (a block attention mask keeps the continuations apart),
and the LM head runs only on the positions that are scored. Padding never changes a score: no real
position attends to a padded one.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

from anemone_core.errors import AnemoneError
from anemone_evaluator.requests import GenRequest, LoglikRequest, RollingRequest, chat_messages


def model_fingerprint(folder: Path) -> str:
    """sha256 of config.json plus each weight file's name, size, first and last MiB (fast, content-based)."""
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for f in sorted(folder.glob("*.safetensors")):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            h.update(fh.read())
    return h.hexdigest()[:16]


class LocalTarget:
    def __init__(self, path: str | Path, batch_size: int = 16, device: str = "cpu", dtype: str = "float32",
                 max_length: int | None = None, prefix_cache: bool = True, pack_tokens: int = 1024) -> None:
        import torch
        import transformers

        self.path = Path(path)
        self.name = self.path.name
        self.batch_size, self.prefix_cache, self.pack_tokens = batch_size, prefix_cache, pack_tokens
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise AnemoneError(f"--device {device} but no CUDA GPU is visible: use --device cpu")
        self.device = torch.device(device)
        self.tok = transformers.AutoTokenizer.from_pretrained(self.path)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(self.path, dtype=getattr(torch, dtype))
        self.model.to(self.device)  # type: ignore[arg-type]  # transformers' `to` stub rejects torch.device
        self.model.eval()
        cfg = self.model.config
        self.max_length = max_length or next(
            (getattr(cfg, a) for a in ("n_positions", "max_position_embeddings", "n_ctx") if getattr(cfg, a, None)),
            2048)
        self.prefix_id = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        self._bos_text = str(self.tok.decode([self.prefix_id])) if self.prefix_id is not None else None
        self._fingerprint: str | None = None
        eos = self.model.generation_config.eos_token_id  # what `generate` stops on: an id or a list
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else [self.tok.eos_token_id]
        self._eos_ids = {int(e) for e in eos if e is not None}
        self._stop_checks: dict[tuple[str, ...], Any] = {}

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.path)
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        return {"kind": "local", "path": str(self.path), "fingerprint": self.fingerprint(),
                "device": str(self.device), "dtype": str(self.model.dtype).replace("torch.", ""),
                "batch_size": self.batch_size, "prefix_cache": self.prefix_cache}

    # -- text -> tokens (lm-eval's rules) ---------------------------------------------------------------------
    def render(self, prompt: str, chat: bool, system: str | None) -> str:
        if not chat:
            return prompt
        if not self.tok.chat_template:
            raise AnemoneError(f"chat_template=true but the tokenizer in {self.path} has no chat template: "
                               "run with chat_template=false")
        return str(self.tok.apply_chat_template(chat_messages(prompt, system), tokenize=False,
                                                add_generation_prompt=True))

    def encode(self, text: str) -> list[int]:
        kw = {"add_special_tokens": False} if self._bos_text and text.startswith(self._bos_text) else {}
        return self.tok.encode(text, **kw)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not context:
            return [self.prefix_id], self.encode(continuation)
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        whole, ctx = self.encode(context + continuation), self.encode(context)
        return ctx, whole[len(ctx):]

    # -- scoring ----------------------------------------------------------------------------------------------
    def loglikelihood(self, reqs: list[LoglikRequest]) -> list[tuple[float, bool]]:
        pairs = [self.encode_pair(self.render(r.prompt, r.chat, r.system), r.continuation) for r in reqs]
        return self.score_tokens(pairs)

    def loglikelihood_rolling(self, reqs: list[RollingRequest]) -> list[float]:
        pairs, owner = [], []
        for i, r in enumerate(reqs):
            for ctx, cont in rolling_windows(self.encode(r.text), self.prefix_id, self.max_length):
                pairs.append((ctx, cont))
                owner.append(i)
        totals = [0.0] * len(reqs)
        for i, ll in zip(owner, self.score_windows(pairs), strict=True):
            totals[i] += ll
        return totals

    def score_windows(self, pairs: list[tuple[list[int], list[int]]]) -> list[float]:
        """Sum log p(cont | ctx) per (ctx, cont) pair, each pair a row of its own (rolling windows).

        Rows are sorted by length and right-padded with no attention mask: under the causal mask no real
        position sees a pad, and attention takes its fast causal path (a 4-D mask, as packing needs, makes
        it several times slower on long rows). The LM head runs on the scored positions only.
        """
        import torch

        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        out = [0.0] * len(pairs)
        start = 0
        with torch.inference_mode():
            while start < len(order):
                width = len(pairs[order[start]][0]) + len(pairs[order[start]][1]) - 1  # the batch's longest row
                # Few tokens per pass pad little (similar lengths) and still fill the CPU's matrix units.
                rows = max(1, min(self.batch_size, self.pack_tokens // max(width, 1)))
                batch = order[start: start + rows]
                start += rows
                ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)  # (B, L)
                flat_b, flat_t, targets = [], [], []
                for b, i in enumerate(batch):
                    ctx, cont = pairs[i]
                    row = (ctx + cont)[:-1]
                    ids[b, : len(row)] = torch.tensor(row)
                    flat_b += [b] * len(cont)
                    flat_t += range(len(ctx) - 1, len(row))
                    targets += cont
                hidden = self.model.base_model(input_ids=ids.to(self.device)).last_hidden_state  # (B, L, H)
                picked, _ = self._head_logprobs(hidden[flat_b, flat_t], targets, greedy=False)
                k = 0
                for i in batch:
                    n = len(pairs[i][1])
                    out[i] = float(sum(picked[k: k + n]))
                    k += n
        return out

    def _head_logprobs(self, hidden, targets: list[int], greedy: bool) -> tuple[list[float], list[bool]]:
        """log p(target) per position (and whether it is the argmax) from final hidden states (M, H).

        The LM head and the log-normalizer run in chunks of positions: full (M, V) float32 logits plus a
        log_softmax copy would be gigabytes for a few thousand positions; logit - logsumexp needs neither.
        """
        import torch

        head = self.model.get_output_embeddings()
        tgt = torch.tensor(targets, device=hidden.device)
        picked, is_greedy = [], []
        for s in range(0, len(targets), 1024):
            logits = head(hidden[s: s + 1024]).float()  # (m, V)
            t = tgt[s: s + 1024, None]
            if greedy:
                is_greedy += (logits.argmax(-1) == t[:, 0]).tolist()
            top = logits.amax(-1, keepdim=True)  # (m, 1)
            target = logits.gather(-1, t) - top  # (m, 1)
            lse = logits.sub_(top).exp_().sum(-1, keepdim=True).log_()  # in place: no second (m, V) buffer
            picked += (target - lse)[:, 0].tolist()
        return picked, is_greedy

    def score_tokens(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Sum log p(cont | ctx) and greedy-ness per (ctx, cont) token pair.

        Requests sharing a context are packed into one row: the context once, then each continuation (minus
        its last token) as a segment that attends to the context and to itself only, with positions restarting
        where the context ends; the context's last position predicts every continuation's first token.
        """
        import torch

        groups: dict[tuple[tuple[int, ...], int], list[int]] = defaultdict(list)
        items: list[tuple[list[int], list[int]]] = []
        for i, (ctx, cont) in enumerate(pairs):
            full = (ctx + cont)[-(self.max_length + 1):]  # lm-eval's left truncation
            cont = cont[-(len(full) - 1):] if len(cont) >= len(full) else cont
            ctx = full[: len(full) - len(cont)]
            items.append((ctx, cont))
            # Unshared, a request is a pack of one: context + continuation under a plain causal mask.
            groups[(tuple(ctx), i) if not self.prefix_cache else (tuple(ctx), -1)].append(i)
        packs = []  # (context, [request ids]) with at most `pack_tokens` tokens unless one request is longer
        for (shared, _), members in groups.items():
            cur: list[int] = []
            size = len(shared)
            for i in members:
                seg = max(0, len(items[i][1]) - 1)
                if cur and size + seg > max(self.pack_tokens, len(shared) + seg):
                    packs.append((list(shared), cur))
                    cur, size = [], len(shared)
                cur.append(i)
                size += seg
            packs.append((list(shared), cur))
        packs.sort(key=lambda p: -(len(p[0]) + sum(len(items[i][1]) for i in p[1])))  # similar lengths together
        out: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
        with torch.inference_mode():
            for start in range(0, len(packs), self.batch_size):
                self._score_packs(packs[start: start + self.batch_size], items, out)
        return out

    def _score_packs(self, packs, items, out) -> None:
        import torch

        rows_ids, rows_pos, rows_scored = [], [], []  # per pack: tokens, positions, [(request, rows, targets)]
        for ctx, members in packs:
            ids, pos, scored = list(ctx), list(range(len(ctx))), []
            for i in members:
                cont = items[i][1]
                start = len(ids)
                ids += cont[:-1]
                pos += list(range(len(ctx), len(ctx) + len(cont) - 1))
                scored.append((i, [len(ctx) - 1] + list(range(start, start + len(cont) - 1)), cont,
                               [(start, start + len(cont) - 1)]))
            rows_ids.append(ids)
            rows_pos.append(pos)
            rows_scored.append(scored)
        width = max(len(r) for r in rows_ids)
        n = len(rows_ids)
        dev = self.device
        ids_t = torch.full((n, width), self.pad_id, dtype=torch.long)  # (B, L)
        pos_t = torch.zeros((n, width), dtype=torch.long)
        allow = torch.zeros((n, 1, width, width), dtype=torch.bool)  # (B, 1, L, L): query may see key
        for b, (ids, pos, scored) in enumerate(zip(rows_ids, rows_pos, rows_scored, strict=True)):
            ids_t[b, : len(ids)] = torch.tensor(ids)
            pos_t[b, : len(pos)] = torch.tensor(pos)
            shared = len(ids) - sum(e - s for *_, segs in scored for s, e in segs)
            allow[b, 0, :shared, :shared] = torch.ones(shared, shared, dtype=torch.bool).tril()
            for *_, segs in scored:
                for s, e in segs:  # a continuation sees the context and its own earlier tokens
                    allow[b, 0, s:e, :shared] = True
                    allow[b, 0, s:e, s:e] = torch.ones(e - s, e - s, dtype=torch.bool).tril()
            pad = torch.arange(len(ids), width)
            allow[b, 0, pad, pad] = True  # padding sees itself only, so no row is fully masked (no NaN)
        hidden = self.model.base_model(input_ids=ids_t.to(dev), attention_mask=allow.to(dev),
                                       position_ids=pos_t.to(dev)).last_hidden_state  # (B, L, H)
        # The LM head runs on the scored positions of the whole batch only.
        flat_b = [b for b, scored in enumerate(rows_scored) for _, rows, _, _ in scored for _ in rows]
        flat_t = [t for scored in rows_scored for _, rows, _, _ in scored for t in rows]
        targets = [tok for scored in rows_scored for _, _, cont, _ in scored for tok in cont]
        picked, greedy = self._head_logprobs(hidden[flat_b, flat_t], targets, greedy=True)  # (M,) each
        k = 0
        for scored in rows_scored:
            for i, _, cont, _ in scored:
                n = len(cont)
                out[i] = (sum(picked[k: k + n]), all(greedy[k: k + n]))
                k += n

    # -- generation -------------------------------------------------------------------------------------------
    def generate(self, reqs: list[GenRequest]) -> list[str]:
        """Greedy text until a stop string, EOS or `max_tokens`, as lm-eval's `generate_until` returns it.

        Decoded by `greedy.greedy_decode` (continuous batching, `batch_size` sequences at a time); the text is
        the continuation decoded without special tokens, cut at the first stop string.
        """
        from anemone_evaluator.greedy import greedy_decode

        encoded, checks = [], []
        for r in reqs:
            budget = self.max_length - r.max_tokens  # lm-eval's left truncation, leaving room to generate
            ids = self.encode(self.render(r.prompt, r.chat, r.system))[-budget:]
            encoded.append(ids or [self.prefix_id])  # an empty prompt starts from BOS, as scoring does
            checks.append(self._stop_check(tuple(s for s in r.until if s)))
        tokens = greedy_decode(self.model, encoded, [r.max_tokens for r in reqs],
                               lambda i, toks: checks[i](toks), self._eos_ids, max_rows=self.batch_size)
        texts = []
        for r, toks in zip(reqs, tokens, strict=True):
            text = str(self.tok.decode(toks, skip_special_tokens=True))
            for s in r.until:
                if s:
                    text = text.split(s)[0]
            texts.append(text)
        return texts

    def _stop_check(self, until: tuple[str, ...]):
        """tokens -> whether the decoded text holds a stop string. Only the last few tokens are decoded per
        step; a hit there is confirmed on the whole text, so a row never stops early (a miss only costs
        extra steps: the text is cut at the first stop string anyway)."""
        if until not in self._stop_checks:
            tail = max((len(self.tok.encode(s, add_special_tokens=False)) for s in until), default=0) + 2

            def check(toks: list[int]) -> bool:
                if not until or not any(s in self.tok.decode(toks[-tail:], skip_special_tokens=True) for s in until):
                    return False
                text = self.tok.decode(toks, skip_special_tokens=True)
                return any(s in text for s in until)

            self._stop_checks[until] = check
        return self._stop_checks[until]


def rolling_windows(tokens: list[int], prefix: int, max_len: int) -> list[tuple[list[int], list[int]]]:
    """lm-eval's disjoint rolling windows: (context tokens, scored tokens); the first is conditioned on BOS."""
    if not tokens:
        return []
    first = min(max_len, len(tokens))
    windows = [([prefix], tokens[:first])]
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_len)
        end = done + n
        window = tokens[max(0, end - max_len - 1): end - 1]
        windows.append((window[: len(window) - (n - 1)], tokens[end - n: end]))
        done = end
    return windows

