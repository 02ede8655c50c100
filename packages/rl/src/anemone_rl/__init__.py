"""anemone-rl: SFT, DPO and GRPO on Ray workers, with torch (CPU) and vLLM (GPU) generation."""

__version__ = "0.1.0"
