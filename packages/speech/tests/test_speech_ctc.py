import math

import torch

from anemone_speech.ctc import Lexicon, beam_decode, ctc_loss, greedy_decode, prefix_beam_search


def _peaky(seq: list[int], vocab: int = 5) -> torch.Tensor:
    lp = torch.full((len(seq), vocab + 1), -10.0)
    lp[torch.arange(len(seq)), torch.tensor(seq)] = 0.0
    return lp.log_softmax(-1)


def test_greedy_merges_repeats_and_drops_blanks():
    blank = 5
    lp = _peaky([1, 1, blank, 1, 2, 2, blank, blank, 3])[None]
    assert greedy_decode(lp, torch.tensor([9]), blank) == [[1, 1, 2, 3]]
    assert greedy_decode(lp, torch.tensor([4]), blank) == [[1, 1]]


def test_beam_matches_greedy_on_peaky_outputs():
    blank = 5
    lp = _peaky([1, 1, blank, 1, 2, 2, blank, 3])[None]
    assert beam_decode(lp, torch.tensor([8]), blank, beam_size=4) == [[1, 1, 2, 3]]


def test_beam_finds_the_sequence_greedy_misses():
    # Two frames, labels {a=0}, blank=1. Per frame P(a)=0.4, P(blank)=0.6: greedy path is blank blank -> "".
    # But P("a") = 0.4*0.6 + 0.6*0.4 + 0.4*0.4 = 0.64 > P("") = 0.36, which prefix beam search finds.
    lp = torch.tensor([[0.4, 0.6], [0.4, 0.6]]).log()
    assert greedy_decode(lp[None], torch.tensor([2]), 1) == [[]]
    assert prefix_beam_search(lp.numpy(), blank=1, beam_size=4) == [0]


def test_ctc_loss_is_finite_and_small_for_the_right_path():
    blank = 5
    lp = _peaky([1, blank, 2, 3])[None]
    good = ctc_loss(lp, torch.tensor([4]), torch.tensor([[1, 2, 3]]), torch.tensor([3]), blank)
    bad = ctc_loss(lp, torch.tensor([4]), torch.tensor([[3, 2, 1]]), torch.tensor([3]), blank)
    assert math.isfinite(good.item()) and good < 0.01 < bad


def test_lexicon_beam_spells_only_known_words():
    # vocab a b t ' ', blank 4. Frames: b, then a (0.4) vs blank (0.6), then t: the best path spells "bt".
    vocab = ["a", "b", "t", " "]
    lp = torch.tensor([[0.01, 0.96, 0.01, 0.01, 0.01], [0.4, 0.0, 0.0, 0.0, 0.6], [0.01, 0.01, 0.96, 0.01, 0.01]])
    lp = (lp + 1e-6).log()
    assert prefix_beam_search(lp.numpy(), blank=4, beam_size=4) == [1, 2]  # "bt"
    lexicon = Lexicon(["bat", "tab"], vocab)
    assert prefix_beam_search(lp.numpy(), blank=4, beam_size=4, lexicon=lexicon) == [1, 0, 2]  # "bat"
    assert beam_decode(lp[None], torch.tensor([3]), 4, beam_size=4, lexicon=lexicon) == [[1, 0, 2]]


def test_lexicon_allows_a_space_only_after_a_whole_word():
    lexicon = Lexicon(["bat", "tab"], ["a", "b", "t", " "])
    assert lexicon.allows((1, 0), 2) and not lexicon.allows((1, 0), 1)  # "ba" + t yes, + b no
    assert lexicon.allows((1, 0, 2), 3) and not lexicon.allows((1, 0), 3)  # space after "bat", not after "ba"
    assert lexicon.allows((1, 0, 2, 3), 2)  # a new word starts after the space
    assert lexicon.complete((1, 0, 2)) and not lexicon.complete((1, 0, 2, 3, 2))


def test_lexicon_beam_drops_an_unfinished_last_word():
    # "bat ta": every frame is sure, so every beam ends inside "tab": the unfinished "ta" is cut, "bat" stays.
    vocab = ["a", "b", "t", " "]
    ids = [1, 0, 2, 3, 2, 0]
    lp = torch.full((len(ids), 5), 1e-4)
    lp[torch.arange(len(ids)), torch.tensor(ids)] = 1.0
    lexicon = Lexicon(["bat", "tab"], vocab)
    assert prefix_beam_search(lp.log().numpy(), blank=4, beam_size=2, lexicon=lexicon) == [1, 0, 2]
    assert lexicon.trim((1, 0)) == () and lexicon.trim((1, 0, 2)) == (1, 0, 2)
