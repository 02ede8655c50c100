"""CTC loss and decoding: greedy (best path), prefix beam search, and prefix beam search restricted to a word
lexicon (closed-vocabulary decoding of character models, as flashlight's lexicon decoder does). The blank is the
last class."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F


def ctc_loss(log_probs: torch.Tensor, out_lens: torch.Tensor, targets: torch.Tensor, target_lens: torch.Tensor,
             blank: int) -> torch.Tensor:
    """Mean over the batch of per-utterance CTC loss divided by target length. log_probs (B, T, V+1)."""
    return F.ctc_loss(log_probs.transpose(0, 1).float(), targets, out_lens, target_lens, blank=blank,
                      reduction="mean", zero_infinity=True)


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks. (B, T, V+1) -> B id lists."""
    best = log_probs.argmax(-1).cpu()  # (B, T)
    out = []
    for row, n in zip(best.tolist(), lengths.tolist(), strict=True):
        ids, prev = [], -1
        for tok in row[:n]:
            if tok != prev and tok != blank:
                ids.append(tok)
            prev = tok
        out.append(ids)
    return out


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


class Lexicon:
    """The words a character model may spell, for `prefix_beam_search`: a label may extend a prefix only while
    the word being spelt is the start of a lexicon word, and a space (or the end) only after a whole word."""

    def __init__(self, words: list[str], vocab: list[str]) -> None:
        self.words = {w for w in words if w}
        self.starts = {w[:i] for w in self.words for i in range(len(w) + 1)}
        self.vocab = vocab  # id -> character
        self.space = vocab.index(" ") if " " in vocab else -1

    def allows(self, prefix: tuple[int, ...], label: int) -> bool:
        word = self.current_word(prefix)
        if label == self.space:
            return word in self.words
        return word + self.vocab[label] in self.starts

    def current_word(self, prefix: tuple[int, ...]) -> str:
        chars = []
        for i in reversed(prefix):
            if i == self.space:
                break
            chars.append(self.vocab[i])
        return "".join(reversed(chars))

    def complete(self, prefix: tuple[int, ...]) -> bool:
        word = self.current_word(prefix)
        return word == "" or word in self.words

    def trim(self, prefix: tuple[int, ...]) -> tuple[int, ...]:
        """`prefix` without its unfinished last word (and the space before it), so only whole words remain."""
        if self.complete(prefix):
            return prefix
        cut = len(prefix) - len(self.current_word(prefix))
        return prefix[: max(0, cut - 1)]


def prefix_beam_search(log_probs: np.ndarray, blank: int, beam_size: int = 8, prune_top_k: int = 16,
                       lexicon: Lexicon | None = None) -> list[int]:
    """CTC prefix beam search over one utterance's (T, V+1) log-probs; returns the best label sequence.

    Each prefix keeps two scores, ending in blank (pb) and ending in a label (pnb), so "a a" and "aa" stay apart.
    With a `lexicon`, prefixes that cannot spell lexicon words are never formed, and the result ends on a whole
    word: the best beam that does, or, where none does (a weak model), the best beam without its unfinished word.
    """
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}
    for t in range(log_probs.shape[0]):
        frame = log_probs[t]
        top = np.argsort(frame)[::-1][:prune_top_k]
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
        for prefix, (pb, pnb) in beams.items():
            total = _logsumexp(pb, pnb)
            for c in top.tolist():
                p = float(frame[c])
                if c == blank:
                    nxt[prefix][0] = _logsumexp(nxt[prefix][0], total + p)
                    continue
                ext = prefix + (c,)
                allowed = lexicon is None or lexicon.allows(prefix, c)
                if prefix and prefix[-1] == c:
                    # a repeat only extends after a blank; without one it collapses into the same prefix
                    if allowed:
                        nxt[ext][1] = _logsumexp(nxt[ext][1], pb + p)
                    nxt[prefix][1] = _logsumexp(nxt[prefix][1], pnb + p)
                elif allowed:
                    nxt[ext][1] = _logsumexp(nxt[ext][1], total + p)
        ranked = sorted(nxt.items(), key=lambda kv: _logsumexp(*kv[1]), reverse=True)[:beam_size]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    finished = {k: v for k, v in beams.items() if lexicon is None or lexicon.complete(k)}
    if not finished:  # only a lexicon can leave no beam on a whole word
        assert lexicon is not None
        return list(lexicon.trim(max(beams.items(), key=lambda kv: _logsumexp(*kv[1]))[0]))
    return list(max(finished.items(), key=lambda kv: _logsumexp(*kv[1]))[0])


def beam_decode(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int, beam_size: int = 8,
                lexicon: Lexicon | None = None) -> list[list[int]]:
    lp = log_probs.detach().float().cpu().numpy()
    return [prefix_beam_search(lp[i, :n], blank, beam_size, lexicon=lexicon) for i, n in enumerate(lengths.tolist())]
