import torch

from anemone_speech.features import (
    LogMel,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    spec_augment,
    speed_perturb,
    warp_features,
)


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


def test_warp_features_moves_formants_and_tempo(monkeypatch):
    b, m, t = 2, 80, 100
    ramp = torch.arange(m, dtype=torch.float32)[None, :, None].expand(b, m, t).contiguous()  # value = bin index
    lens = torch.tensor([100, 60])
    same, same_lens = warp_features(ramp, lens, 16000)
    assert same is ramp and same_lens is lens
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.ones(*a[0], dtype=k.get("dtype", torch.float32)))
    up, up_lens = warp_features(ramp, lens, 16000, freq_warp=0.1)  # factor 1.1: bin at f reads f / 1.1
    assert torch.equal(up_lens, lens) and up.shape == ramp.shape
    step = float(hz_to_mel(torch.tensor(8000.0, dtype=torch.float64))) / (m + 1)
    centre_hz = mel_to_hz(torch.arange(1, m + 1, dtype=torch.float64) * step)  # (M,) as mel_filterbank's centres
    expected = (hz_to_mel(centre_hz / 1.1) / step - 1).clamp_min(0)  # the (fractional) bin bin k now reads
    torch.testing.assert_close(up[0, :, 0].double(), expected, atol=1e-3, rtol=0)  # the ramp interpolates exactly
    assert (up[0, 1:, 0] < ramp[0, 1:, 0]).all()  # formants move up: every bin reads a lower one
    assert (up[:, 0, :] == 0).all() and (up <= m - 1).all()
    slow, slow_lens = warp_features(ramp, lens, 16000, time_stretch=0.1)  # rate 1.1: fewer frames
    assert slow_lens.tolist() == [91, 55] and slow.shape == (b, m, 91)
    assert (slow[1, :, 55:] == 0).all()  # past the new length is padding
    torch.testing.assert_close(slow[0, :, 0], ramp[0, :, 0])  # a constant-in-time input stays constant
