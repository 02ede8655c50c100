"""Data for training: chat/prompt-completion tokenization with assistant-only labels, collation, packing."""
