"""The LightningModule: CTC training with SpecAugment, greedy-decoded validation WER/CER every epoch,
AdamW with linear warmup and cosine decay stepped per optimizer step (and, under a time budget, by the clock)."""

from __future__ import annotations

import math
import time

import pytorch_lightning as pl
import torch

from anemone_speech.conformer import ConformerCTC
from anemone_speech.ctc import ctc_loss, greedy_decode
from anemone_speech.features import spec_augment, warp_features
from anemone_speech.metrics import error_rates
from anemone_speech.tokenizers import BPETokenizer, CharTokenizer


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear 0 -> 1 over `warmup` steps, cosine 1 -> min_ratio until `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class CTCModule(pl.LightningModule):
    def __init__(self, model: ConformerCTC, tokenizer: CharTokenizer | BPETokenizer, lr: float = 2e-3,
                 weight_decay: float = 1e-3, warmup_steps: int = 200, min_lr_ratio: float = 0.05,
                 augment: dict | None = None, sample_rate: int = 16_000, max_seconds: float | None = None) -> None:
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.lr, self.weight_decay, self.warmup_steps, self.min_lr_ratio = lr, weight_decay, warmup_steps, min_lr_ratio
        self.augment, self.sample_rate = augment, sample_rate
        self.max_seconds = max_seconds  # the run's time budget: the cosine reaches its end when it runs out
        self._fit_t0: float | None = None
        self.blank = tokenizer.vocab_size
        self._val: list[tuple[str, str]] = []
        self.audio_seconds = 0.0  # audio trained on, for the throughput figure
        self.train_seconds = 0.0

    def forward(self, wav: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(wav, wav_lens)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        feats, flen = self.model.features(batch["wav"], batch["wav_lens"])  # (B, M, T)
        if self.augment:
            aug = dict(self.augment)
            warp = {k: aug.pop(k, 0.0) for k in ("freq_warp", "time_stretch")}
            if any(warp.values()):
                feats, flen = warp_features(feats, flen, self.sample_rate, **warp)
            feats = spec_augment(feats, flen, **aug)
        log_probs, out_lens = self.model.encode(feats, flen)  # (B, T', V+1)
        loss = ctc_loss(log_probs, out_lens, batch["targets"], batch["target_lens"], self.blank)
        self.audio_seconds += float(batch["wav_lens"].sum()) / self.sample_rate
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["wav"].shape[0])
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=batch["wav"].shape[0])
        return loss

    def on_train_start(self) -> None:
        self._fit_t0 = time.monotonic()

    def time_progress(self) -> float:
        """Fraction of the time budget used (0 without one)."""
        if not self.max_seconds or self._fit_t0 is None:
            return 0.0
        return (time.monotonic() - self._fit_t0) / self.max_seconds

    def lr_multiplier(self, step: int, warmup: int, total: int) -> float:
        # A time budget cuts a run short on a slow or shared machine: decaying by whichever of steps or time
        # runs out first still ends training at the low learning rate instead of mid-schedule.
        step = max(step, int(self.time_progress() * total)) if step >= warmup else step
        return warmup_cosine(step, warmup, total, self.min_lr_ratio)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        self._step_t0 = time.perf_counter()

    def on_train_batch_end(self, outputs: object, batch: dict, batch_idx: int) -> None:
        self.train_seconds += time.perf_counter() - self._step_t0  # step compute only, not data loading

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        log_probs, out_lens = self.model(batch["wav"], batch["wav_lens"])
        loss = ctc_loss(log_probs, out_lens, batch["targets"], batch["target_lens"], self.blank)
        self.log("val_loss", loss, batch_size=batch["wav"].shape[0], sync_dist=True)
        hyps = [self.tokenizer.decode(ids) for ids in greedy_decode(log_probs, out_lens, self.blank)]
        refs = [self.tokenizer.decode(t[:n].tolist()) for t, n in zip(batch["targets"], batch["target_lens"], strict=True)]
        self._val += list(zip(refs, hyps, strict=True))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        rates = error_rates([r for r, _ in self._val], [h for _, h in self._val])
        self._val = []
        self.log("val_wer", rates["wer"], prog_bar=True, sync_dist=True)
        self.log("val_cer", rates["cer"], sync_dist=True)

    def configure_optimizers(self):
        decay = [p for n, p in self.model.named_parameters() if p.dim() > 1 and "pos_bias" not in n]
        no_decay = [p for n, p in self.model.named_parameters() if p.dim() <= 1 or "pos_bias" in n]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=self.lr, betas=(0.9, 0.98))
        total = int(self.trainer.estimated_stepping_batches)
        warmup = min(self.warmup_steps, max(1, total // 10))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: self.lr_multiplier(s, warmup, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
