"""anemone-evaluator: Benchmarks against a local model or an OpenAI-compatible endpoint, with honest statistics."""

__version__ = "0.1.0"
