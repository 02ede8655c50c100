"""anemone-core."""
