from importlib.resources import files

import pytest
import torch

from anemone_core.config import load_config
from anemone_speech.config import ModelConfig, SpeechTrainConfig
from anemone_speech.conformer import ConformerCTC
from anemone_speech.tokenizers import CharTokenizer
from anemone_speech.transcribe import transcribe_waveforms

RECIPES = sorted(p for p in files("anemone_speech").joinpath("recipes").iterdir() if p.name.endswith(".yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_loads(recipe):
    cfg = load_config(SpeechTrainConfig, str(recipe))
    assert cfg != SpeechTrainConfig()  # a recipe holds deltas


def _model() -> tuple[ConformerCTC, CharTokenizer]:
    torch.manual_seed(0)
    tok = CharTokenizer(list("abcdefghijklmnopqrstuvwxyz' "))
    return ConformerCTC(tok.vocab_size, **ModelConfig(preset="tiny").kwargs()).eval(), tok


def test_batching_does_not_change_transcripts():
    model, tok = _model()
    wavs = [torch.randn(n) * 0.1 for n in (8000, 16000, 12345, 30000)]
    one = transcribe_waveforms(model, tok, wavs, batch_size=1)
    four = transcribe_waveforms(model, tok, wavs, batch_size=4)
    assert one == four and len(one) == 4


def test_long_audio_is_chunked():
    model, tok = _model()
    calls = []
    out = transcribe_waveforms(model, tok, [torch.randn(16000 * 5) * 0.1], batch_size=8, chunk_seconds=1.0,
                               on_batch=calls.append)
    assert sum(calls) == 5 and len(out) == 1  # five 1-second chunks, joined into one transcript
