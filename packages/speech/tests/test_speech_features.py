import torch

from anemone_speech.features import LogMel, mel_filterbank, spec_augment, speed_perturb


def test_filterbank_shape_and_coverage():
    fb = mel_filterbank(512, 80, 16000)
    assert fb.shape == (80, 257)
    assert (fb >= 0).all() and (fb.sum(1) > 0).all()  # no empty filter at 80 mels / 512 FFT


def test_logmel_shapes_and_per_feature_normalization():
    lm = LogMel()
    assert (lm.win, lm.hop, lm.n_fft) == (400, 160, 512)
    wav = torch.randn(2, 16000)
    lens = torch.tensor([16000, 8000])
    feats, flen = lm(wav, lens)
    assert feats.shape == (2, 80, 101) and flen.tolist() == [101, 51]
    valid = feats[1, :, :51]
    torch.testing.assert_close(valid.mean(-1), torch.zeros(80), atol=1e-4, rtol=0)
    torch.testing.assert_close(valid.std(-1), torch.ones(80), atol=1e-3, rtol=0)
    assert (feats[1, :, 51:] == 0).all()


def test_logmel_ignores_padding():
    lm = LogMel()
    wav = torch.randn(1, 12000)
    alone, _ = lm(wav, torch.tensor([12000]))
    padded, _ = lm(torch.cat([wav, torch.randn(1, 4000)], 1), torch.tensor([12000]))
    torch.testing.assert_close(padded[..., : alone.shape[-1]], alone, atol=1e-4, rtol=0)


def test_spec_augment_masks_within_bounds():
    feats = torch.ones(4, 80, 200)
    lens = torch.tensor([200, 150, 100, 50])
    g = torch.Generator().manual_seed(0)
    out = spec_augment(feats, lens, freq_masks=2, freq_width=10, time_masks=2, time_width=0.1, generator=g)
    assert out.shape == feats.shape and (out == 0).any()
    masked_bins = (out == 0).all(-1).sum(-1)  # fully masked mel rows per utterance
    assert (masked_bins <= 20).all()
    assert (feats == 1).all()  # the input is untouched
    same = spec_augment(feats, lens, freq_masks=0, time_masks=0)
    assert torch.equal(same, feats)


def test_speed_perturb_changes_length():
    wav = torch.randn(16000)
    assert abs(speed_perturb(wav, 1.1).shape[0] - 16000 / 1.1) < 20
    assert abs(speed_perturb(wav, 0.9).shape[0] - 16000 / 0.9) < 20
    assert speed_perturb(wav, 1.0) is wav
