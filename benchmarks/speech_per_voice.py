"""WER/CER of a trained speech model on a manifest, overall and per voice, for several decodings.

Scores greedy decoding (the acoustic model alone) and prefix beam search restricted to the words of the training
manifest (closed-vocabulary decoding) at the given beam sizes, on the default synthetic corpus's test split
(two voices never heard in training) unless --manifest says otherwise. Prints one JSON object.

    uv run python benchmarks/speech_per_voice.py --model speech_run/model [--beams 8 32] [--manifest test.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict

import torch

from anemone_speech.manifest import read_manifest
from anemone_speech.metrics import error_rates
from anemone_speech.model_io import load_model
from anemone_speech.synth import SynthConfig, corpus_folder
from anemone_speech.transcribe import read_lexicon, transcribe_utterances


def scores(utts: list, hyps: list[str]) -> dict:
    """Overall and per-voice WER/CER (voices from the manifest's `voice` field)."""
    by_voice: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for u, h in zip(utts, hyps, strict=True):
        by_voice[dict(u.extra).get("voice", "?")].append((u.text, h))
    out = {k: round(v, 4) for k, v in error_rates([u.text for u in utts], hyps).items()}
    out["per_voice"] = {voice: {k: round(v, 4) for k, v in error_rates([r for r, _ in pairs], [h for _, h in pairs]).items()}
                        for voice, pairs in sorted(by_voice.items())}
    return out


def main() -> None:
    corpus = corpus_folder(SynthConfig())
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="speech_run/model", help="model folder of `anemone speech train`")
    ap.add_argument("--manifest", default=str(corpus / "test.jsonl"), help="manifest to score")
    ap.add_argument("--lexicon", default=str(corpus / "train.jsonl"), help="words allowed in beam decoding")
    ap.add_argument("--beams", type=int, nargs="*", default=[8, 32], help="lexicon beam sizes (each > 1)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if any(b < 2 for b in args.beams):
        raise SystemExit(f"--beams {args.beams}: every lexicon beam size must be > 1 (greedy is always scored)")
    torch.set_num_threads(args.threads)
    model, tok, _ = load_model(args.model)
    utts = read_manifest(args.manifest)
    words = read_lexicon(args.lexicon)
    report: dict = {"model": os.path.abspath(args.model), "manifest": args.manifest, "files": len(utts),
                    "lexicon_words": len(set(words))}
    for beam in [1, *args.beams]:
        t0 = time.process_time()
        res = transcribe_utterances(model, tok, utts, 16, beam, lexicon=words if beam > 1 else None)
        hyps = [r["text"] for r in res["results"]]
        name = "greedy" if beam == 1 else f"beam{beam}_lexicon"
        report[name] = {**scores(utts, hyps), "cpu_seconds": round(time.process_time() - t0, 2)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
