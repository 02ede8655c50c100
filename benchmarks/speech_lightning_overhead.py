"""Training throughput of the same Conformer-CTC step under PyTorch Lightning vs a plain PyTorch loop.

Same model (small preset), same batches (the default synthetic corpus's first N training utterances, bucketed),
same SpecAugment, loss, AdamW + warmup/cosine schedule and gradient clipping; 1 torch thread. Runs alternate
(plain, Lightning, plain, Lightning, ...) and are timed in process CPU seconds (1 thread), so time slices lost to
other jobs on a shared machine count against neither; the table gives audio seconds trained per CPU second (data
loading, Trainer set-up and logging included) and Lightning / plain as a ratio.

    uv run python benchmarks/speech_lightning_overhead.py [--utterances 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import pytorch_lightning as pl
import torch

from anemone_speech.config import AugmentConfig, ModelConfig
from anemone_speech.conformer import ConformerCTC
from anemone_speech.ctc import ctc_loss
from anemone_speech.data import SpeechDataModule
from anemone_speech.features import spec_augment
from anemone_speech.lightning_module import CTCModule, warmup_cosine
from anemone_speech.manifest import read_manifest
from anemone_speech.synth import SynthConfig, cached_corpus
from anemone_speech.text import normalize_text
from anemone_speech.tokenizers import build_tokenizer


def setup(n: int):
    utts = read_manifest(cached_corpus(SynthConfig()) / "train.jsonl")[:n]
    tok = build_tokenizer("bpe", [normalize_text(u.text) for u in utts], 256)
    audio_s = sum(u.duration for u in utts)
    return utts, tok, audio_s


def fresh(tok):
    torch.manual_seed(0)
    return ConformerCTC(vocab_size=tok.vocab_size, **ModelConfig().kwargs())


def run_plain(utts, tok) -> float:
    model = fresh(tok).train()
    dm = SpeechDataModule(utts, utts[:16], tok, batch_size=16)
    loader = dm.train_dataloader()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.98), weight_decay=1e-3)
    total = len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total // 10, total, 0.05))
    aug = AugmentConfig().model_dump()
    t0 = time.process_time()
    for batch in loader:
        feats, flen = model.features(batch["wav"], batch["wav_lens"])  # (B, M, T)
        log_probs, out_lens = model.encode(spec_augment(feats, flen, **aug), flen)
        loss = ctc_loss(log_probs, out_lens, batch["targets"], batch["target_lens"], tok.vocab_size)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return time.process_time() - t0


def run_lightning(utts, tok, tmp: str) -> float:
    # configure_optimizers clamps warmup to total // 10 steps, which is what the plain loop uses
    module = CTCModule(fresh(tok), tok, augment=AugmentConfig().model_dump(), warmup_steps=10**9)
    dm = SpeechDataModule(utts, utts[:16], tok, batch_size=16)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, gradient_clip_val=1.0, limit_val_batches=0,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         logger=pl.loggers.CSVLogger(tmp), use_distributed_sampler=False, num_sanity_val_steps=0)
    t0 = time.process_time()
    trainer.fit(module, datamodule=dm)
    return time.process_time() - t0


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--utterances", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    utts, tok, audio_s = setup(args.utterances)
    run_plain(utts[:32], tok)  # warm-up: allocator, oneDNN kernels, file cache
    plain, light = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            plain.append(run_plain(utts, tok))
            light.append(run_lightning(utts, tok, tmp))
    p, lt = statistics.median(plain), statistics.median(light)
    print(f"\n{args.utterances} utterances, {audio_s:.0f} s of audio per epoch, batch 16, 1 torch thread, "
          f"median of {args.repeats} alternating runs, load average {os.getloadavg()[0]:.2f}")
    print(f"{'loop':<12}{'CPU s':>10}{'audio s/s':>12}{'vs plain':>10}")
    print(f"{'plain torch':<12}{p:>10.2f}{audio_s / p:>12.1f}{1.0:>10.3f}")
    print(f"{'Lightning':<12}{lt:>10.2f}{audio_s / lt:>12.1f}{p / lt:>10.3f}")
    print(f"Lightning overhead: {100 * (lt - p) / p:+.1f}% CPU time (runs: plain {plain}, Lightning {light})")


if __name__ == "__main__":
    main()
