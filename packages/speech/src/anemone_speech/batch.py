"""Padding a list of (waveform, token ids) into one batch; torch only, so transcription skips Lightning's import."""

from __future__ import annotations

import torch


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad to the longest item: wav (B, N), wav_lens (B,), targets (B, L), target_lens (B,)."""
    wavs, targets = zip(*batch, strict=True)
    wav_lens = torch.tensor([w.shape[0] for w in wavs])
    target_lens = torch.tensor([t.shape[0] for t in targets])
    wav = torch.zeros(len(wavs), int(wav_lens.max()))
    tgt = torch.zeros(len(targets), max(1, int(target_lens.max())), dtype=torch.long)
    for i, (w, t) in enumerate(zip(wavs, targets, strict=True)):
        wav[i, : w.shape[0]] = w
        tgt[i, : t.shape[0]] = t
    return {"wav": wav, "wav_lens": wav_lens, "targets": tgt, "target_lens": target_lens}
