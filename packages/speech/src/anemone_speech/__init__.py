"""anemone-speech: Speech recognition on PyTorch Lightning: Conformer-CTC, manifests, tokenizers, WER, transcribe."""

__version__ = "0.1.0"
