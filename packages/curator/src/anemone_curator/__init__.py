"""anemone-curator: Text data pipelines: filters, language id, exact and fuzzy dedup on CPU, PII, tokenize to Megatron."""

__version__ = "0.1.0"
