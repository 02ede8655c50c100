"""Log-mel features in torch (torch.stft, no torchaudio), per-feature normalization, SpecAugment, a voice/tempo warp
of the features (VTLP-style), speed perturbation of waveforms."""

from __future__ import annotations

import math

import torch
from torch import nn


def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """Triangular HTK-mel filters, (n_mels, n_fft // 2 + 1), each normalized to unit area (Slaney style)."""
    f_max = f_max or sample_rate / 2
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    mels = torch.linspace(hz_to_mel(torch.tensor(f_min)), hz_to_mel(torch.tensor(f_max)), n_mels + 2, dtype=torch.float64)
    hz = mel_to_hz(mels)  # (M + 2,)
    lower = (freqs[None] - hz[:-2, None]) / (hz[1:-1, None] - hz[:-2, None])  # (M, F)
    upper = (hz[2:, None] - freqs[None]) / (hz[2:, None] - hz[1:-1, None])
    fb = torch.clamp(torch.minimum(lower, upper), min=0.0)
    fb = fb * (2.0 / (hz[2:] - hz[:-2]))[:, None]
    return fb.float()


def lengths_mask(lengths: torch.Tensor, n: int) -> torch.Tensor:
    return (torch.arange(n, device=lengths.device)[None] < lengths[:, None]).float()  # (B, N)


class LogMel(nn.Module):
    """(B, N) waveforms + lengths -> (B, n_mels, T) normalized log-mel + frame lengths.

    25 ms Hann window, 10 ms hop, pre-emphasis 0.97, log(mel + 2^-24), then per-feature normalization:
    each mel bin gets zero mean and unit variance over the utterance's valid frames (NeMo's "per_feature").
    """

    window: torch.Tensor
    fb: torch.Tensor

    def __init__(self, sample_rate: int = 16_000, n_mels: int = 80, win_ms: float = 25.0, hop_ms: float = 10.0) -> None:
        super().__init__()
        self.sample_rate, self.n_mels = sample_rate, n_mels
        self.win = int(round(sample_rate * win_ms / 1000))
        self.hop = int(round(sample_rate * hop_ms / 1000))
        self.n_fft = 2 ** math.ceil(math.log2(self.win))
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)
        self.register_buffer("fb", mel_filterbank(self.n_fft, n_mels, sample_rate), persistent=False)

    def frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        return num_samples // self.hop + 1  # torch.stft(center=True) frame count

    @torch.no_grad()
    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        wav = wav.float()
        wav = torch.cat([wav[:, :1], wav[:, 1:] - 0.97 * wav[:, :-1]], dim=1)  # pre-emphasis
        wav = wav * lengths_mask(lengths, wav.shape[1])  # samples past each length are padding
        spec = torch.stft(wav, self.n_fft, self.hop, self.win, self.window, center=True,
                          pad_mode="constant", return_complex=True)  # zero padding, as the batch's padding is
        power = spec.real.pow(2) + spec.imag.pow(2)  # (B, F, T)
        mel = torch.log(torch.matmul(self.fb, power) + 2**-24)  # (B, M, T)
        flen = self.frames(lengths)  # (B,)
        mask = (torch.arange(mel.shape[-1], device=mel.device)[None] < flen[:, None]).unsqueeze(1)  # (B, 1, T)
        n = flen.clamp_min(2).to(mel.dtype)[:, None, None]
        mean = (mel * mask).sum(-1, keepdim=True) / n
        var = ((mel - mean).pow(2) * mask).sum(-1, keepdim=True) / (n - 1)
        mel = (mel - mean) / (var.sqrt() + 1e-5)
        return mel.masked_fill(~mask, 0.0), flen


def spec_augment(feats: torch.Tensor, lengths: torch.Tensor, freq_masks: int = 2, freq_width: int = 27,
                 time_masks: int = 2, time_width: float = 0.05, generator: torch.Generator | None = None) -> torch.Tensor:
    """SpecAugment (Park et al. 2019) without time warp: zero `freq_masks` bands of up to `freq_width` mel bins
    and `time_masks` spans of up to `time_width` of each utterance's frames. (B, M, T) -> (B, M, T)."""
    b, m, t = feats.shape
    out = feats.clone()
    dev = feats.device
    mel_idx = torch.arange(m, device=dev)[None]  # (1, M)
    time_idx = torch.arange(t, device=dev)[None]  # (1, T)
    for _ in range(freq_masks):
        w = torch.randint(0, freq_width + 1, (b, 1), generator=generator).to(dev)
        start = (torch.rand((b, 1), generator=generator).to(dev) * (m - w).clamp_min(1)).long()
        band = (mel_idx >= start) & (mel_idx < start + w)  # (B, M)
        out = out.masked_fill(band[:, :, None], 0.0)
    for _ in range(time_masks):
        max_w = (lengths.float() * time_width).long().clamp_min(1)[:, None].to(dev)  # (B, 1)
        w = (torch.rand((b, 1), generator=generator).to(dev) * (max_w + 1)).long()
        start = (torch.rand((b, 1), generator=generator).to(dev) * (lengths[:, None].to(dev) - w).clamp_min(1)).long()
        span = (time_idx >= start) & (time_idx < start + w)  # (B, T)
        out = out.masked_fill(span[:, None, :], 0.0)
    return out


def warp_features(feats: torch.Tensor, lengths: torch.Tensor, sample_rate: int, freq_warp: float = 0.0,
                  time_stretch: float = 0.0, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """A new voice and tempo per utterance, on log-mel features: (B, M, T) -> (B, M, T'), new lengths.

    Frequency: every utterance gets a factor a ~ U[1 - freq_warp, 1 + freq_warp] and mel bin m (centre f_m Hz) takes
    the value at f_m / a, interpolated between bins: formants move by a, as a shorter or longer vocal tract moves
    them (VTLP, Jaitly & Hinton 2013). Time: a rate r ~ U[1 - time_stretch, 1 + time_stretch] resamples the valid
    frames linearly to round(T / r) (faster or slower speech at the same pitch). Together they do what speed
    perturbation of the waveform does (which moves both by one factor), with the two drawn independently and at
    a fraction of the cost. Zero warps return the input unchanged.
    """
    b, m, t = feats.shape
    if freq_warp > 0:
        mel_max = hz_to_mel(torch.tensor(sample_rate / 2, dtype=torch.float64))
        centre_mels = torch.linspace(0, float(mel_max), m + 2, dtype=torch.float64)[1:-1]  # (M,) as mel_filterbank
        step = float(mel_max) / (m + 1)
        a = 1 + freq_warp * (2 * torch.rand((b, 1), generator=generator, dtype=torch.float64) - 1)  # (B, 1)
        src = hz_to_mel(mel_to_hz(centre_mels)[None] / a) / step - 1  # (B, M) fractional source bin
        src = src.clamp(0, m - 1).to(feats.device)
        lo = src.floor().long().clamp(max=max(m - 2, 0))  # (B, M) lower neighbour; hi = lo + 1
        hi = (lo + 1).clamp(max=m - 1)
        w = (src - lo).to(feats.dtype)[:, :, None]  # (B, M, 1) weight of hi
        feats = (feats.gather(1, lo[:, :, None].expand(b, m, t)) * (1 - w)
                 + feats.gather(1, hi[:, :, None].expand(b, m, t)) * w)
    if time_stretch > 0:
        r = 1 + time_stretch * (2 * torch.rand((b,), generator=generator) - 1)  # (B,)
        new_lens = (lengths.float().cpu() / r).round().long().clamp_min(1)
        out = feats.new_zeros(b, m, int(new_lens.max()))
        for i in range(b):
            n, k = int(lengths[i]), int(new_lens[i])
            seg = feats[i : i + 1, :, :n]
            out[i, :, :k] = torch.nn.functional.interpolate(seg, size=k, mode="linear", align_corners=True)[0]
        feats, lengths = out, new_lens.to(lengths.device)
    return feats, lengths


def speed_perturb(wav: torch.Tensor, factor: float) -> torch.Tensor:
    """Play (N,) audio `factor` times faster (pitch shifts too, as in Kaldi's speed perturbation)."""
    if factor == 1.0:
        return wav
    from anemone_speech.audio import resample

    # Resampling from r to r/factor and playing back at r speeds the audio up by `factor`.
    base = 1000
    return resample(wav, base, int(round(base / factor)))
