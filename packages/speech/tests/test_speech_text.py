from anemone_speech.metrics import error_rates, rtfx
from anemone_speech.text import normalize_text, number_to_words


def test_normalize():
    assert normalize_text("Hello, World!  It's 42 o'clock.") == "hello world it's forty two o'clock"
    assert normalize_text("Café  déjà-vu") == "cafe deja vu"
    assert normalize_text("'quoted'") == "quoted"


def test_numbers():
    assert number_to_words(0) == "zero"
    assert number_to_words(115) == "one hundred fifteen"
    assert number_to_words(2_000_019) == "two million nineteen"


def test_error_rates_normalize_and_skip_empty_refs():
    r = error_rates(["Hello world", "", "a b c d"], ["hello, World", "anything", "a x c"])
    assert r["wer"] == 2 / 6  # one substitution, one deletion over 6 reference words
    assert 0 < r["cer"] < 1
    assert error_rates(["one two"], [""])["wer"] == 1.0


def test_rtfx():
    assert rtfx(100.0, 2.0) == 50.0
