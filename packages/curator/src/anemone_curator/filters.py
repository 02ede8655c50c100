"""Heuristic quality filters with their published default thresholds: Gopher (quality, repetition), C4, FineWeb.

Thresholds follow Rae et al. 2021 (MassiveText, appendix A), Raffel et al. 2020 (C4) and Penedo et al. 2024
(FineWeb), as datatrove implements them; each check's rejection reason is the name used below. Words are
split by a regex that keeps punctuation runs as their own tokens (close to spaCy's English tokenizer, which
datatrove uses, at a fraction of the cost).
"""

from __future__ import annotations

import re
from collections import Counter

from anemone_curator.stage import Doc, Filter

# Like spaCy: a word keeps inner punctuation (foo.bar, don't); other punctuation is one token per mark.
WORD_RE = re.compile(r"\w(?:\S*\w)?|\.\.\.|[^\w\s]")
PUNCT_ONLY_RE = re.compile(r"[^\w\s]+$")
PARAGRAPH_RE = re.compile(r"\n{2,}")
LINE_RE = re.compile(r"\n+")
SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")
CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
C4_END_PUNCT = (".", "?", "!", '"', "'")
C4_POLICY = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
# Sentence-final marks (the common ones of datatrove's TERMINAL_PUNCTUATION; no quotes, colons or brackets).
TERMINAL_PUNCT = (
    ".",
    "!",
    "?",
    "。",
    "！",
    "？",
    "।",
    "॥",
    "؟",
    "۔",
    "։",
    "።",
    "‼",
    "‽",
    "⁇",
    "⁈",
    "⁉",
    "။",
    "។",
)


def split_words(text: str) -> list[str]:
    return WORD_RE.findall(text)


def find_duplicates(items: list[str]) -> tuple[int, int]:
    """(number of repeated items, characters in them), counting each repeat after its first occurrence."""
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return dup_items, dup_chars


def top_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent n-gram: len(ngram) * count (Gopher `top_n_gram`)."""
    if len(words) < n:
        return 0
    counts = Counter(zip(*(words[i:] for i in range(n)), strict=False))
    gram, count = counts.most_common(1)[0]
    return (sum(len(w) for w in gram) + n - 1) * count


def duplicated_ngram_chars(words: list[str], n: int) -> int:
    """Characters in n-grams that repeat an earlier n-gram, skipping past each repeat (Gopher `dup_n_grams`)."""
    seen: set[tuple[str, ...]] = set()
    repeated = i = 0
    limit = len(words) - n + 1
    while i < limit:
        gram = tuple(words[i : i + n])
        if gram in seen:
            repeated += sum(len(w) for w in gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


class GopherQuality(Filter):
    """Gopher quality rules: document length, mean word length, symbols, bullets, ellipses, alphabetic words, stop words."""

    name = "gopher_quality"

    def __init__(
        self,
        min_doc_words: int = 50,
        max_doc_words: int = 100_000,
        min_avg_word_length: float = 3.0,
        max_avg_word_length: float = 10.0,
        max_symbol_word_ratio: float = 0.1,
        max_bullet_lines_ratio: float = 0.9,
        max_ellipsis_lines_ratio: float = 0.3,
        min_alpha_words_ratio: float = 0.8,
        min_stop_words: int = 2,
    ) -> None:
        super().__init__()
        self.min_doc_words, self.max_doc_words = min_doc_words, max_doc_words
        self.min_avg_word_length, self.max_avg_word_length = min_avg_word_length, max_avg_word_length
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet_lines_ratio, self.max_ellipsis_lines_ratio = (
            max_bullet_lines_ratio,
            max_ellipsis_lines_ratio,
        )
        self.min_alpha_words_ratio, self.min_stop_words = min_alpha_words_ratio, min_stop_words

    def reject_reason(self, doc: Doc) -> str | None:
        text = doc["text"]
        words = split_words(text)
        n_words = len(words)
        real_words = [w for w in words if not PUNCT_ONLY_RE.match(w)]
        if len(real_words) < self.min_doc_words:
            return "gopher_short_doc"
        if len(real_words) > self.max_doc_words:
            return "gopher_long_doc"
        avg_len = sum(len(w) for w in real_words) / len(real_words)
        if avg_len < self.min_avg_word_length:
            return "gopher_below_avg_word_length"
        if avg_len > self.max_avg_word_length:
            return "gopher_above_avg_word_length"
        if text.count("#") / n_words > self.max_symbol_word_ratio:
            return "gopher_too_many_hashes"
        if (text.count("...") + text.count("…")) / n_words > self.max_symbol_word_ratio:
            return "gopher_too_many_ellipsis"
        lines = text.splitlines() or [text]
        bullets = sum(line.lstrip().startswith(("•", "-")) for line in lines)
        if bullets / len(lines) > self.max_bullet_lines_ratio:
            return "gopher_too_many_bullets"
        ellipsis_lines = sum(line.rstrip().endswith(("...", "…")) for line in lines)
        if ellipsis_lines / len(lines) > self.max_ellipsis_lines_ratio:
            return "gopher_too_many_end_ellipsis"
        alpha = sum(any(c.isalpha() for c in w) for w in words)
        if alpha / n_words < self.min_alpha_words_ratio:
            return "gopher_below_alpha_threshold"
        if sum(w.lower() in GOPHER_STOP_WORDS for w in words) < self.min_stop_words:
            return "gopher_enough_stop_words"
        return None


class GopherRepetition(Filter):
    """Gopher repetition rules: duplicated lines and paragraphs, top n-gram coverage, duplicated n-gram coverage."""

    name = "gopher_repetition"

    def __init__(
        self,
        dup_line_frac: float = 0.3,
        dup_para_frac: float = 0.3,
        dup_line_char_frac: float = 0.2,
        dup_para_char_frac: float = 0.2,
        top_n_grams: list[tuple[int, float]] | None = None,
        dup_n_grams: list[tuple[int, float]] | None = None,
    ) -> None:
        super().__init__()
        self.dup_line_frac, self.dup_para_frac = dup_line_frac, dup_para_frac
        self.dup_line_char_frac, self.dup_para_char_frac = dup_line_char_frac, dup_para_char_frac
        self.top_n_grams = top_n_grams if top_n_grams is not None else [(2, 0.2), (3, 0.18), (4, 0.16)]
        self.dup_n_grams = dup_n_grams if dup_n_grams is not None else [
            (5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)
        ]  # fmt: skip

    def reject_reason(self, doc: Doc) -> str | None:
        text = doc["text"]
        n_chars = len(text)
        paragraphs = PARAGRAPH_RE.split(text.strip())
        dup, dup_chars = find_duplicates(paragraphs)
        if dup / len(paragraphs) > self.dup_para_frac:
            return "dup_para_frac"
        if dup_chars / n_chars > self.dup_para_char_frac:
            return "dup_para_char_frac"
        lines = LINE_RE.split(text)
        dup, dup_chars = find_duplicates(lines)
        if dup / len(lines) > self.dup_line_frac:
            return "dup_line_frac"
        if dup_chars / n_chars > self.dup_line_char_frac:
            return "dup_line_char_frac"
        words = split_words(text)
        for n, frac in self.top_n_grams:
            if top_ngram_chars(words, n) / n_chars > frac:
                return f"top_{n}_gram"
        for n, frac in self.dup_n_grams:
            if duplicated_ngram_chars(words, n) / n_chars > frac:
                return f"duplicated_{n}_n_grams"
        return None


class C4Quality(Filter):
    """C4 rules: drop lines without terminal punctuation, short lines, javascript and policy lines; drop documents
    with lorem ipsum, curly brackets or too few sentences. Rewrites `text` to the kept lines."""

    name = "c4_quality"

    def __init__(
        self,
        min_num_sentences: int = 5,
        min_words_per_line: int = 3,
        max_word_length: int = 1000,
        remove_citations: bool = True,
        filter_no_terminal_punct: bool = True,
        filter_lorem_ipsum: bool = True,
        filter_javascript: bool = True,
        filter_curly_bracket: bool = True,
        filter_policy: bool = True,
    ) -> None:
        super().__init__()
        self.min_num_sentences, self.min_words_per_line = min_num_sentences, min_words_per_line
        self.max_word_length, self.remove_citations = max_word_length, remove_citations
        self.filter_no_terminal_punct, self.filter_lorem_ipsum = filter_no_terminal_punct, filter_lorem_ipsum
        self.filter_javascript, self.filter_curly_bracket = filter_javascript, filter_curly_bracket
        self.filter_policy = filter_policy

    def reject_reason(self, doc: Doc) -> str | None:
        kept: list[str] = []
        n_sentences = 0
        for raw_line in doc["text"].splitlines():
            line = raw_line.strip()
            words = line.split()
            if any(len(w) > self.max_word_length for w in words):
                self.stats.counters["c4_lines_max_word_length"] += 1
                continue
            if self.remove_citations:
                line = CITATION_RE.sub("", line)
            if self.filter_no_terminal_punct and (not line.endswith(C4_END_PUNCT) or line.endswith("...")):
                self.stats.counters["c4_lines_no_terminal_punct"] += 1
                continue
            if len(words) < self.min_words_per_line:
                self.stats.counters["c4_lines_too_few_words"] += 1
                continue
            lower = line.lower()
            if self.filter_lorem_ipsum and "lorem ipsum" in lower:
                return "c4_lorem_ipsum"
            if self.filter_javascript and "javascript" in lower:
                self.stats.counters["c4_lines_javascript"] += 1
                continue
            if self.filter_curly_bracket and "{" in line:
                return "c4_curly_bracket"
            if self.filter_policy and any(p in lower for p in C4_POLICY):
                self.stats.counters["c4_lines_policy"] += 1
                continue
            n_sentences += len(SENTENCE_RE.split(line))
            kept.append(line)
        if n_sentences < self.min_num_sentences:
            return "c4_too_few_sentences"
        doc["text"] = "\n".join(kept).strip()
        return None


class FineWebQuality(Filter):
    """FineWeb rules: share of lines ending in punctuation, share of short lines, duplicated-line characters,
    newlines per word."""

    name = "fineweb_quality"

    def __init__(
        self,
        line_punct_thr: float = 0.12,
        line_punct_exclude_zero: bool = False,
        short_line_thr: float = 0.67,
        short_line_length: int = 30,
        char_duplicates_ratio: float = 0.01,
        new_line_ratio: float = 0.3,
    ) -> None:
        super().__init__()
        self.line_punct_thr, self.line_punct_exclude_zero = line_punct_thr, line_punct_exclude_zero
        self.short_line_thr, self.short_line_length = short_line_thr, short_line_length
        self.char_duplicates_ratio, self.new_line_ratio = char_duplicates_ratio, new_line_ratio

    def reject_reason(self, doc: Doc) -> str | None:
        text = doc["text"]
        lines = [line for line in text.split("\n") if line.strip()]
        if not lines:
            return "fineweb_empty"
        ratio = sum(line.endswith(TERMINAL_PUNCT) for line in lines) / len(lines)
        if ratio < self.line_punct_thr and not (ratio == 0 and self.line_punct_exclude_zero):
            return "fineweb_line_punct_ratio"
        if sum(len(line) <= self.short_line_length for line in lines) / len(lines) > self.short_line_thr:
            return "fineweb_short_line_ratio"
        if find_duplicates(lines)[1] / max(1, len(text.replace("\n", ""))) > self.char_duplicates_ratio:
            return "fineweb_char_dup_ratio"
        if text.count("\n") / max(1, len(split_words(text))) > self.new_line_ratio:
            return "fineweb_list_ratio"
        return None


class LengthFilter(Filter):
    """Keep documents whose character length lies in [min_chars, max_chars]."""

    name = "length"

    def __init__(self, min_chars: int = 1, max_chars: int = 1_000_000) -> None:
        super().__init__()
        self.min_chars, self.max_chars = min_chars, max_chars

    def reject_reason(self, doc: Doc) -> str | None:
        n = len(doc["text"])
        if n < self.min_chars:
            return "length_too_short"
        if n > self.max_chars:
            return "length_too_long"
        return None
