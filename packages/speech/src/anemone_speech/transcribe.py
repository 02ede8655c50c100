"""Batch transcription and evaluation: files or a manifest -> text, WER/CER against references, RTFx."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from anemone_core.errors import AnemoneError
from anemone_speech.audio import read_audio
from anemone_speech.batch import collate
from anemone_speech.conformer import ConformerCTC
from anemone_speech.ctc import Lexicon, beam_decode, greedy_decode
from anemone_speech.manifest import Utterance, read_manifest
from anemone_speech.metrics import error_rates, rtfx
from anemone_speech.text import normalize_text
from anemone_speech.tokenizers import BPETokenizer, CharTokenizer


def read_lexicon(path: str | Path) -> list[str]:
    """Words for lexicon decoding: a text file of words (any whitespace between them), or a manifest whose
    `text` fields give them (e.g. the training manifest). Normalized as targets are."""
    p = Path(path).expanduser()
    if p.suffix.lower() in (".json", ".jsonl"):
        texts = [u.text for u in read_manifest(p, ("text",))]
    elif p.is_file():
        texts = p.read_text(encoding="utf-8").split()
    else:
        raise AnemoneError(f"lexicon file '{p}' does not exist: pass a word list (.txt) or a manifest (.jsonl)")
    words = sorted({w for t in texts for w in normalize_text(t).split()})
    if not words:
        raise AnemoneError(f"lexicon file '{p}' holds no words: pass a word list or a manifest with text")
    return words


def build_lexicon(tokenizer: CharTokenizer | BPETokenizer, words: list[str]) -> Lexicon:
    if not isinstance(tokenizer, CharTokenizer):
        raise AnemoneError("lexicon decoding needs a character model (tokenizer kind 'char'), this model's tokenizer "
                           f"is {tokenizer.kind!r}: drop --lexicon")
    return Lexicon(words, tokenizer.vocab)


def inputs_to_utterances(inputs: list[str], needed: tuple[str, ...] = ("audio_filepath",)) -> list[Utterance]:
    """Audio files and/or manifests (`.json`/`.jsonl`) -> utterances (text empty for bare files)."""
    utts: list[Utterance] = []
    for item in inputs:
        if Path(item).suffix.lower() in (".json", ".jsonl"):
            utts += read_manifest(item, needed)
        else:
            utts.append(Utterance(str(Path(item).expanduser()), -1.0, ""))
    if not utts:
        raise AnemoneError("FILES_OR_MANIFEST is empty: pass WAV/FLAC files or a .jsonl manifest")
    return utts


@torch.inference_mode()
def transcribe_waveforms(model: ConformerCTC, tokenizer: CharTokenizer | BPETokenizer, wavs: list[torch.Tensor],
                         batch_size: int = 16, beam_size: int = 1, chunk_seconds: float = 30.0,
                         sample_rate: int = 16_000, on_batch: Callable[[int], None] | None = None,
                         lexicon: list[str] | None = None) -> list[str]:
    """(N_i,) waveforms at `sample_rate` -> texts. Audio longer than `chunk_seconds` is cut into chunks
    transcribed separately and joined (bounded memory for long files; a word on a cut may be split).
    `lexicon` (words; beam search only) restricts a character model's output to those words."""
    if lexicon is not None and beam_size <= 1:
        raise AnemoneError("lexicon decoding runs inside beam search: pass a beam size > 1 (--beam-size 8)")
    lex = build_lexicon(tokenizer, lexicon) if lexicon is not None else None
    chunk = max(1, int(chunk_seconds * sample_rate))
    pieces = [(i, w[s : s + chunk]) for i, w in enumerate(wavs) for s in range(0, max(1, w.shape[0]), chunk)]
    order = sorted(range(len(pieces)), key=lambda k: pieces[k][1].shape[0])  # similar lengths, less padding
    device = next(model.parameters()).device
    texts: dict[int, str] = {}
    blank = tokenizer.vocab_size
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = collate([(pieces[k][1], torch.zeros(0, dtype=torch.long)) for k in idx])
        log_probs, out_lens = model(batch["wav"].to(device), batch["wav_lens"].to(device))
        decode = greedy_decode if beam_size <= 1 else (lambda lp, ol, b: beam_decode(lp, ol, b, beam_size, lex))
        for k, ids in zip(idx, decode(log_probs, out_lens, blank), strict=True):
            texts[k] = tokenizer.decode(ids)
        if on_batch:
            on_batch(len(idx))
    out = [""] * len(wavs)
    for k, (i, _) in enumerate(pieces):
        out[i] = " ".join(filter(None, [out[i], texts[k].strip()]))
    return out


def transcribe_utterances(model: ConformerCTC, tokenizer: CharTokenizer | BPETokenizer, utts: list[Utterance],
                          batch_size: int = 16, beam_size: int = 1, sample_rate: int = 16_000,
                          on_batch: Callable[[int], None] | None = None, lexicon: list[str] | None = None) -> dict:
    """Read, transcribe and score (where references exist). Returns results per file plus WER, CER, RTFx.

    RTFx counts model time only (features, encoder, decoding), not file reading, as NeMo's does.
    """
    wavs = [read_audio(u.audio_filepath, sample_rate) for u in utts]
    audio_s = sum(w.shape[0] for w in wavs) / sample_rate
    t0 = time.perf_counter()
    hyps = transcribe_waveforms(model, tokenizer, wavs, batch_size, beam_size, sample_rate=sample_rate,
                                on_batch=on_batch, lexicon=lexicon)
    seconds = time.perf_counter() - t0
    results = [{"audio_filepath": u.audio_filepath, "duration": round(w.shape[0] / sample_rate, 3), "text": h,
                **({"reference": u.text} if u.text else {})} for u, w, h in zip(utts, wavs, hyps, strict=True)]
    summary: dict = {"files": len(utts), "audio_seconds": round(audio_s, 2), "seconds": round(seconds, 3),
                     "rtfx": round(rtfx(audio_s, seconds), 1)}
    scored = [(u.text, h) for u, h in zip(utts, hyps, strict=True) if u.text]
    if scored:
        summary.update(error_rates([r for r, _ in scored], [h for _, h in scored]))
    return {"summary": summary, "results": results}
