"""Each heuristic filter at its published thresholds, plus agreement with datatrove's implementation."""

from __future__ import annotations

import inspect

import pytest

from anemone_curator import pipeline_config as pc
from anemone_curator.filters import (
    C4Quality,
    FineWebQuality,
    GopherQuality,
    GopherRepetition,
    LengthFilter,
    duplicated_ngram_chars,
    split_words,
    top_ngram_chars,
)
from anemone_curator.stages import STAGES

PROSE = (
    "The river runs past the old mill and the children play near the water every summer. "
    "Their parents watch from the bridge, talking about the weather and the harvest. "
)


def words(n: int, word: str = "river") -> str:
    return " ".join([word] * n)


def reason(f, text: str) -> str | None:
    return f.reject_reason({"id": "x", "text": text})


def test_config_defaults_equal_the_classes():
    for name, cls in STAGES.items():
        cfg_cls = next(
            c
            for c in vars(pc).values()
            if isinstance(c, type)
            and hasattr(c, "model_fields")
            and "stage" in c.model_fields
            and c.model_fields["stage"].default == name
        )
        params = inspect.signature(cls.__init__).parameters
        for field, info in cfg_cls.model_fields.items():
            if field == "stage":
                continue
            default = params[field].default
            if default is None and info.default is not None:
                default = getattr(cls(), field)  # list defaults are filled in __init__
            assert info.default == default or set(info.default or []) == set(default or []), (name, field)


def test_gopher_quality_thresholds():
    f = GopherQuality()
    base = (PROSE * 4).split()
    assert reason(f, " ".join(base[:50])) is None
    assert reason(f, " ".join(base[:49])) == "gopher_short_doc"
    assert reason(GopherQuality(max_doc_words=60), " ".join(base[:61])) == "gopher_long_doc"
    assert reason(f, words(60, "ab") + " the and") == "gopher_below_avg_word_length"
    assert reason(f, words(60, "abcdefghijk") + " the and") == "gopher_above_avg_word_length"
    text = " ".join(base[:60])  # 60 words + punctuation tokens
    n_tokens = len(split_words(text))
    k = n_tokens // 9 + 1  # each '#' is a token too: k / (n + k) > 0.1  <=>  k > n / 9
    assert reason(f, text + " #" * k) == "gopher_too_many_hashes"
    assert reason(f, text + " #" * (k - 1)) is None
    assert reason(f, "\n".join(["- " + PROSE] * 10)) == "gopher_too_many_bullets"
    assert reason(f, "\n".join([PROSE + "..."] * 3 + [PROSE] * 7)) is None  # 0.3 of lines: not above
    assert reason(f, "\n".join([PROSE + "..."] * 4 + [PROSE] * 6)) == "gopher_too_many_end_ellipsis"
    assert reason(f, words(60, "river") + " the and") is None
    assert reason(f, words(60, "river") + " the") == "gopher_enough_stop_words"
    assert reason(f, words(50, "river") + " the and" + " 1234" * 14) == "gopher_below_alpha_threshold"


def unique(i: int, n: int = 20) -> str:
    return " ".join(f"w{i}x{j}" for j in range(n))


def test_gopher_repetition_thresholds():
    f = GopherRepetition()
    assert reason(f, "\n\n".join(unique(i) for i in range(10))) is None
    same = "same same paragraph here"
    assert reason(f, "\n\n".join([unique(i) for i in range(7)] + [same] * 4)) is None  # 3/11 repeats <= 0.3
    assert reason(f, "\n\n".join([unique(i) for i in range(5)] + [same] * 5)) == "dup_para_frac"  # 4/10
    long_same = unique(99, 40)
    assert reason(f, "\n\n".join([unique(i) for i in range(8)] + [long_same] * 3)) == "dup_para_char_frac"
    assert reason(f, "\n".join([unique(i) for i in range(5)] + [same] * 5)) == "dup_line_frac"
    assert reason(f, "\n".join([unique(i) for i in range(8)] + [long_same] * 3)) == "dup_line_char_frac"
    w = split_words("the cat " * 30 + unique(1))
    assert top_ngram_chars(w, 2) == len("the cat") * 30
    assert duplicated_ngram_chars(["a", "b", "c", "a", "b", "c"], 3) == 3
    assert reason(f, "the cat " * 30 + unique(1, 100)) == "top_2_gram"
    # A repeated 5-word phrase covering just over 15% of the characters.
    phrase = "alpha beta gamma delta epsilon "
    body = unique(2, 100)
    n_rep = int(0.15 * len(body) / len(phrase.strip().replace(" ", ""))) + 2
    assert reason(f, body + " " + phrase * n_rep) is not None


def test_c4_rules():
    f = C4Quality()
    good = "\n".join(f"Sentence number {i} is a fine line of text." for i in range(5))
    assert reason(f, good) is None
    assert reason(f, "\n".join(good.splitlines()[:4])) == "c4_too_few_sentences"
    assert reason(f, good + "\nlorem ipsum dolor sit amet.") == "c4_lorem_ipsum"
    assert reason(f, good + "\nuse {braces} in code.") == "c4_curly_bracket"
    doc = {
        "id": "x",
        "text": good
        + "\nno terminal punctuation\nEnable javascript to see this.\nRead our privacy policy now.\nTwo words.",
    }
    assert f.reject_reason(doc) is None
    assert doc["text"] == good  # the bad lines are removed, the rest kept
    assert f.stats.counters["c4_lines_javascript"] == 1 and f.stats.counters["c4_lines_policy"] == 1
    doc = {"id": "y", "text": good + "\nA citation[1] here, see [edit] this."}
    assert f.reject_reason(doc) is None and doc["text"].endswith("A citation here, see  this.")


def test_fineweb_rules():
    f = FineWebQuality()
    long_lines = [f"This is line number {i} of a perfectly reasonable paragraph." for i in range(10)]
    assert reason(f, "\n".join(long_lines)) is None
    no_punct = [line.rstrip(".") for line in long_lines]
    assert reason(f, "\n".join(no_punct[:9] + long_lines[:1])) == "fineweb_line_punct_ratio"  # 0.1 < 0.12
    assert reason(f, "\n".join(no_punct[:8] + long_lines[:2])) is None  # 0.2
    short = ["Short line here."] * 1
    assert (
        reason(f, "\n".join([f"Short {i}." for i in range(7)] + long_lines[:3])) == "fineweb_short_line_ratio"
    )
    assert reason(f, "\n".join(long_lines + long_lines[:1])) == "fineweb_char_dup_ratio"
    assert reason(f, "\n".join(long_lines + short)) is None
    many_newlines = (
        "\n".join(["A long line that ends with a period and has many words in it."] * 1) + "\n" * 10 + "."
    )
    assert reason(FineWebQuality(char_duplicates_ratio=1), many_newlines) == "fineweb_list_ratio"
    assert reason(f, "") == "fineweb_empty"


def test_length_filter():
    assert reason(LengthFilter(min_chars=5), "abcd") == "length_too_short"
    assert reason(LengthFilter(max_chars=3), "abcd") == "length_too_long"


def test_agrees_with_datatrove_on_the_sample_corpus():
    pytest.importorskip("datatrove")
    pytest.importorskip("spacy")
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    from anemone_curator.corpus import sample_corpus
    from anemone_curator.formats import expand_inputs, read_documents
    from anemone_curator.stage import Rejected

    docs = [
        d
        for p in expand_inputs([str(sample_corpus())])
        for d in read_documents(p)
        if not isinstance(d, Rejected)
    ]
    docs = docs[:300]
    pairs = [
        (GopherQuality(), GopherQualityFilter(), 0.88),
        (GopherRepetition(), GopherRepetitionFilter(), 0.95),
        (C4Quality(), C4QualityFilter(), 0.95),
        (FineWebQuality(), FineWebQualityFilter(), 0.95),
    ]
    for ours, theirs, floor in pairs:
        agree = 0
        for d in docs:
            keep = ours.reject_reason(dict(d)) is None
            r = theirs.filter(Document(text=d["text"], id=d["id"]))
            agree += keep == (r[0] if isinstance(r, tuple) else bool(r))
        assert agree / len(docs) >= floor, (type(ours).__name__, agree / len(docs))
