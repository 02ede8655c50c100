"""Transcription speed (RTFx = audio seconds / processing seconds) of the small Conformer-CTC preset on CPU.

Transcribes the default synthetic corpus's test split (150 utterances) with a trained model folder (--model) or,
without one, a randomly initialized small preset (greedy decoding costs the same either way; beam search is
slower on an untrained model's flat outputs). Model time only (features + encoder + decoding), files preloaded.
With a character model, a last row decodes with beam 8 restricted to the training manifest's words (--lexicon).

    uv run python benchmarks/speech_rtfx.py [--model speech_run/model] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from anemone_speech.audio import read_audio
from anemone_speech.config import ModelConfig
from anemone_speech.conformer import ConformerCTC
from anemone_speech.manifest import read_manifest
from anemone_speech.model_io import load_model
from anemone_speech.synth import SynthConfig, cached_corpus
from anemone_speech.tokenizers import CharTokenizer
from anemone_speech.transcribe import read_lexicon, transcribe_waveforms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:
        model, tok, _ = load_model(args.model)
        label = args.model
    else:
        tok = CharTokenizer(list("abcdefghijklmnopqrstuvwxyz' "))
        model = ConformerCTC(vocab_size=256, **ModelConfig().kwargs()).eval()
        tok.vocab = tok.vocab + ["?"] * (256 - len(tok.vocab))  # same head size as the default BPE model
        label = "random-init small preset"
    corpus = cached_corpus(SynthConfig())
    utts = read_manifest(corpus / "test.jsonl")
    wavs = [read_audio(u.audio_filepath) for u in utts]
    audio_s = sum(w.shape[0] for w in wavs) / 16000
    params = sum(p.numel() for p in model.parameters())
    transcribe_waveforms(model, tok, wavs[:16], batch_size=16)  # warm-up
    print(f"\n{label}: {params / 1e6:.2f}M parameters, {len(wavs)} utterances, {audio_s:.0f} s of audio, "
          f"{args.threads} torch thread(s), load average {os.getloadavg()[0]:.2f}")
    # wall-clock RTFx depends on what else the shared machine runs; CPU-time RTFx (audio s / process CPU s,
    # 1 thread) is what this process would get with a core to itself
    print(f"{'decoding':<18}{'batch':>6}{'seconds':>10}{'RTFx':>8}{'CPU s':>8}{'RTFx/CPU':>10}")
    runs: list[tuple[int, int, list[str] | None]] = [(1, 1, None), (1, 16, None), (4, 16, None)]
    if isinstance(tok, CharTokenizer) and args.model:
        runs.append((8, 16, read_lexicon(corpus / "train.jsonl")))
    for beam, batch, lexicon in runs:
        t0, c0 = time.perf_counter(), time.process_time()
        transcribe_waveforms(model, tok, wavs, batch_size=batch, beam_size=beam, lexicon=lexicon)
        s, c = time.perf_counter() - t0, time.process_time() - c0
        name = "greedy" if beam == 1 else f"beam {beam}" + (" + lexicon" if lexicon else "")
        print(f"{name:<18}{batch:>6}{s:>10.2f}{audio_s / s:>8.1f}{c:>8.2f}{audio_s / c:>10.1f}")


if __name__ == "__main__":
    main()
