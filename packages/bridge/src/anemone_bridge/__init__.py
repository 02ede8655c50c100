"""anemone-bridge: Hugging Face <-> Megatron-Core checkpoint conversion, any TP/PP/EP layout, verified on CPU."""

__version__ = "0.1.0"
