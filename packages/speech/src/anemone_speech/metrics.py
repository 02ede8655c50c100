"""WER and CER (jiwer) on normalized text, and RTFx (audio seconds per processing second)."""

from __future__ import annotations

from anemone_speech.text import normalize_text


def error_rates(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """Corpus-level WER and CER after `normalize_text`; empty references are skipped (nothing to score)."""
    import jiwer

    pairs = [(normalize_text(r), normalize_text(h)) for r, h in zip(refs, hyps, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        return {"wer": float("nan"), "cer": float("nan")}
    r, h = [p[0] for p in pairs], [p[1] for p in pairs]
    return {"wer": float(jiwer.wer(r, h)), "cer": float(jiwer.cer(r, h))}


def rtfx(audio_seconds: float, processing_seconds: float) -> float:
    """Inverse real-time factor: 100 means an hour of audio takes 36 s."""
    return audio_seconds / max(processing_seconds, 1e-9)
