import pytest

from anemone_core.errors import AnemoneError
from anemone_speech.tokenizers import build_tokenizer, load_tokenizer
from anemone_speech.words import WORDS

TEXTS = [" ".join(WORDS[i : i + 6]) for i in range(0, len(WORDS) - 6)]


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_round_trip_and_save_load(tmp_path, kind):
    tok = build_tokenizer(kind, TEXTS, vocab_size=100)
    text = "the quick brown fox"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size for i in ids)
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.kind == kind and again.encode(text) == ids and again.vocab_size == tok.vocab_size


def test_bpe_is_shorter_than_chars():
    char, bpe = build_tokenizer("char", TEXTS), build_tokenizer("bpe", TEXTS, 200)
    assert len(bpe.encode("the quick brown fox")) < len(char.encode("the quick brown fox"))


def test_bpe_vocab_too_large_names_the_field():
    with pytest.raises(AnemoneError, match="tokenizer.vocab_size = 50000"):
        build_tokenizer("bpe", ["a b c"], 50000)
