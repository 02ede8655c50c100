"""anemone-automodel: PyTorch-native trainer for Hugging Face causal LMs: pretrain, SFT, LoRA, with FSDP2 and tensor parallel."""

__version__ = "0.1.0"
