"""Audio I/O: read WAV/FLAC with soundfile, mix to mono, resample in torch; clear errors naming the file."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from anemone_core.errors import AnemoneError

SAMPLE_RATE = 16_000


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Read `path` as mono float32 at `sample_rate` (resampling if the file differs). Returns (N,)."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AnemoneError(f"audio file '{p}' does not exist: check the path (relative paths in a manifest "
                           "are resolved against the manifest's folder)")
    if not p.is_file():
        raise AnemoneError(f"audio path '{p}' is not a file: pass a WAV or FLAC file")
    if p.stat().st_size == 0:
        raise AnemoneError(f"audio file '{p}' is empty (0 bytes): re-record or re-export it as WAV/FLAC")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)  # (N, C)
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError for unreadable data
        raise AnemoneError(f"audio file '{p}' could not be decoded ({exc}): it must be a valid WAV or FLAC file; "
                           "convert it, e.g. `ffmpeg -i in.mp3 -ar 16000 -ac 1 out.wav`") from None
    if data.shape[0] == 0:
        raise AnemoneError(f"audio file '{p}' holds no samples: re-record or re-export it")
    wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))  # (N,) mono
    return resample(wav, sr, sample_rate)


def write_audio(path: str | Path, wav: torch.Tensor | np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono float audio as 16-bit PCM WAV (or FLAC by extension)."""
    import soundfile as sf

    arr = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    sf.write(str(path), np.clip(arr, -1.0, 1.0), sample_rate, subtype="PCM_16")


@lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, width: int = 16, rolloff: float = 0.95) -> tuple[torch.Tensor, int]:
    """Windowed-sinc polyphase kernel (Hann window), the same construction as torchaudio's resample.

    Returns (new, 1, K) filters, one per output phase, and the padding `width`.
    """
    base = min(orig, new) * rolloff  # cut-off below both Nyquist frequencies, to avoid aliasing
    w = math.ceil(width * orig / base)
    idx = torch.arange(-w, w + orig, dtype=torch.float64)[None, None] / orig  # (1, 1, K)
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx  # (new, 1, K)
    t = (t * base).clamp(-width, width)
    window = torch.cos(t * math.pi / width / 2) ** 2
    t = t * math.pi
    scale = base / orig
    kernel = torch.where(t == 0, torch.tensor(1.0, dtype=torch.float64), torch.sin(t) / t) * window * scale
    return kernel.float(), w


def resample(wav: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """Resample (N,) or (B, N) audio from `orig` to `new` Hz with a windowed-sinc polyphase filter."""
    if orig == new:
        return wav
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    kernel, w = _sinc_kernel(o, n)
    squeeze = wav.dim() == 1
    x = wav.reshape(-1, wav.shape[-1]).float()  # (B, N)
    length = x.shape[-1]
    x = torch.nn.functional.pad(x[:, None], (w, w + o))  # (B, 1, N + 2w + o)
    y = torch.nn.functional.conv1d(x, kernel.to(x.device), stride=o)  # (B, n, frames)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)  # interleave phases: (B, frames * n)
    y = y[:, : math.ceil(n * length / o)]
    return y[0] if squeeze else y
