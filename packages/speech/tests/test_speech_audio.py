import math

import numpy as np
import pytest
import soundfile as sf
import torch

from anemone_core.errors import AnemoneError
from anemone_speech.audio import read_audio, resample, write_audio


def _sine(freq: float, sr: int, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(sr * seconds)) / sr
    return 0.5 * torch.sin(2 * math.pi * freq * t)


def _peak_hz(wav: torch.Tensor, sr: int) -> float:
    spec = torch.fft.rfft(wav).abs()
    return float(spec.argmax()) * sr / wav.shape[0]


@pytest.mark.parametrize(("orig", "new"), [(22050, 16000), (8000, 16000), (44100, 16000)])
def test_resample_keeps_frequency_and_length(orig, new):
    y = resample(_sine(440.0, orig), orig, new)
    assert y.shape[0] == new
    assert abs(_peak_hz(y, new) - 440.0) < 2.0
    # amplitude preserved away from the edges
    assert abs(float(y[1000:-1000].abs().max()) - 0.5) < 0.02


def test_resample_removes_content_above_new_nyquist():
    y = resample(_sine(7000.0, 22050) + _sine(300.0, 22050), 22050, 8000)
    spec = torch.fft.rfft(y).abs()
    # the 7 kHz tone must not alias down into the 8 kHz signal (its Nyquist is 4 kHz)
    alias_bin = int(1000 * y.shape[0] / 8000)  # 8000 - 7000 = 1 kHz alias
    assert spec[alias_bin] < 0.01 * spec.max()


def test_read_audio_resamples_wrong_rate_and_mixes_stereo(tmp_path):
    stereo = torch.stack([_sine(440.0, 22050), _sine(440.0, 22050)], dim=1).numpy()
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 22050)
    wav = read_audio(path, 16000)
    assert wav.dim() == 1 and wav.shape[0] == 16000
    assert abs(_peak_hz(wav, 16000) - 440.0) < 2.0


def test_write_then_read_flac(tmp_path):
    path = tmp_path / "a.flac"
    write_audio(path, _sine(200.0, 16000), 16000)
    assert read_audio(path).shape[0] == 16000


def test_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF not really a wav file")
    header_only = tmp_path / "nosamples.wav"
    sf.write(header_only, np.zeros(0, dtype=np.float32), 16000)
    for path, words in [(tmp_path / "missing.wav", "does not exist"), (empty, "empty"),
                        (corrupt, "could not be decoded"), (header_only, "no samples"), (tmp_path, "not a file")]:
        with pytest.raises(AnemoneError, match=words) as err:
            read_audio(path)
        assert str(path) in str(err.value)
