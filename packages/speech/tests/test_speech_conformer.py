import torch

from anemone_speech.config import MODEL_PRESETS, ModelConfig
from anemone_speech.conformer import ConformerCTC, RelPositionMultiHeadAttention


def _tiny(**kw) -> ConformerCTC:
    torch.manual_seed(0)
    return ConformerCTC(vocab_size=11, **{**ModelConfig(preset="tiny").kwargs(), "dropout": 0.0, **kw})


def test_shapes_and_lengths_8x():
    m = _tiny(subsampling_factor=8).eval()
    lp, lens = m(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    assert lp.shape == (2, 13, 12)  # 101 frames -> 51 -> 26 -> 13 (8x), vocab + blank
    assert lens.tolist() == [13, 7]
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2, 13))


def test_4x_subsampling():
    m = _tiny(subsampling_factor=4).eval()
    lp, lens = m(torch.randn(1, 16000), torch.tensor([16000]))
    assert lp.shape[1] == 26 and lens.tolist() == [26]


def test_batch_padding_does_not_change_outputs():
    m = _tiny(n_layers=2).eval()
    wav = torch.randn(2, 24000)
    alone, n = m(wav[:1, :10000], torch.tensor([10000]))
    batched, lens = m(wav, torch.tensor([10000, 24000]))
    assert lens[0] == n[0]
    torch.testing.assert_close(batched[0, : n[0]], alone[0], atol=1e-4, rtol=1e-4)


def test_rel_shift_aligns_relative_positions():
    t = 5
    # scores against positions t-1 ... -(t-1): entry k holds relative position (t-1) - k
    rel = torch.arange(t - 1, -t, -1).float()[None, None, None].expand(1, 1, t, 2 * t - 1)
    shifted = RelPositionMultiHeadAttention.rel_shift(rel.contiguous())
    expected = torch.arange(t)[:, None] - torch.arange(t)[None]  # i - j
    assert torch.equal(shifted[0, 0], expected.float())


def test_presets_build_and_small_is_bigger():
    sizes = {}
    for name in MODEL_PRESETS:
        m = ConformerCTC(vocab_size=128, **ModelConfig(preset=name).kwargs())
        sizes[name] = sum(p.numel() for p in m.parameters())
    assert sizes["tiny"] < 100_000 < 1_000_000 < sizes["small"]


def test_backward_runs():
    m = _tiny()
    lp, lens = m(torch.randn(2, 8000), torch.tensor([8000, 6000]))
    lp.mean().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
