"""`anemone speech`: the command group of anemone-speech."""

from __future__ import annotations

import argparse
import sys

DEFAULT_RUN = "speech_run"


def register(parser: argparse.ArgumentParser) -> None:
    """speech recognition on PyTorch Lightning: Conformer-CTC, manifests, tokenizers, WER, transcribe"""
    from anemone_core.config import add_config_args
    from anemone_speech.config import SpeechTrainConfig
    from anemone_speech.synth import SynthConfig

    sub = parser.add_subparsers(dest="verb", metavar="<verb>")

    p = sub.add_parser("synth", help="make a synthetic speech corpus (eSpeak NG) with train/validation/test manifests")
    add_config_args(p, SynthConfig)
    p.add_argument("--overwrite", action="store_true", help="replace an existing out_dir")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_synth)

    p = sub.add_parser("train", help="train a Conformer-CTC model with Lightning (default: on the synthetic corpus)")
    add_config_args(p, SpeechTrainConfig)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output_dir")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_train)

    for verb, helptext in (("transcribe", "transcribe WAV/FLAC files or a manifest; prints the text"),
                           ("evaluate", "WER, CER and RTFx of a model on a manifest with references")):
        p = sub.add_parser(verb, help=helptext)
        p.add_argument("inputs", nargs="*", metavar="FILES_OR_MANIFEST",
                       help="audio files and/or .jsonl manifests (default: the synthetic corpus's test split)")
        p.add_argument("--model", default=f"{DEFAULT_RUN}/model",
                       help=f"model folder from `anemone speech train` (default: {DEFAULT_RUN}/model)")
        p.add_argument("--batch-size", type=int, default=16, help="utterances per forward pass")
        p.add_argument("--beam-size", type=int, default=1, help="1: greedy CTC decoding; >1: prefix beam search")
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
        p.add_argument("--lexicon", help="character models, with --beam-size > 1: only spell words from this word list "
                       "(.txt) or from the texts of this manifest (.jsonl), e.g. the training manifest")
        p.add_argument("--device", default="cpu", help="cpu or cuda")
        p.add_argument("--output", help="also write the results as a JSON-lines manifest here")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=_transcribe if verb == "transcribe" else _evaluate)


def _synth(args: argparse.Namespace) -> int:
    from anemone_core.cli import print_json, print_table
    from anemone_core.config import config_from_args
    from anemone_core.io import atomic_dir
    from anemone_speech.synth import SynthConfig, synthesize

    cfg = config_from_args(SynthConfig, args)
    with atomic_dir(cfg.out_dir, overwrite=args.overwrite) as tmp:
        splits = synthesize(cfg, tmp)
    rows = {k: {"utterances": len(v), "hours": round(sum(u.duration for u in v) / 3600, 3),
                "voices": len({dict(u.extra)["voice"] for u in v})} for k, v in splits.items()}
    if args.json:
        print_json({"out_dir": cfg.out_dir, "splits": rows})
    else:
        print_table(f"synthetic corpus in {cfg.out_dir}", ["split", "utterances", "hours", "voices"],
                    [[k, r["utterances"], r["hours"], r["voices"]] for k, r in rows.items()])
    return 0


def _train(args: argparse.Namespace) -> int:
    from anemone_core.cli import print_json, print_table
    from anemone_core.config import config_from_args
    from anemone_speech.config import SpeechTrainConfig
    from anemone_speech.train import train

    cfg = config_from_args(SpeechTrainConfig, args)
    results = train(cfg, overwrite=args.overwrite)
    if args.json:
        print_json(results)
    else:
        test = results.get("test", {})
        print_table("anemone speech train", ["metric", "value"], [
            ["model", results["model_dir"]], ["best validation WER", results["best_val_wer"]],
            ["test WER", test.get("wer", "-")], ["test CER", test.get("cer", "-")],
            ["test WER, lexicon beam", results.get("test_lexicon", {}).get("wer", "-")],
            ["train seconds", results["train_seconds"]], ["epochs", results["epochs"]]])
    return 0


def _run_inference(args: argparse.Namespace) -> dict:
    import torch

    from anemone_core.errors import AnemoneError
    from anemone_core.metrics import progress
    from anemone_speech.manifest import Utterance, write_manifest
    from anemone_speech.model_io import load_model
    from anemone_speech.transcribe import inputs_to_utterances, read_lexicon, transcribe_utterances

    if args.batch_size < 1 or args.beam_size < 1 or args.threads < 1:
        raise AnemoneError("--batch-size, --beam-size and --threads must be >= 1: pass a positive integer")
    torch.set_num_threads(args.threads)
    needed = ("audio_filepath", "text") if args.verb == "evaluate" else ("audio_filepath",)
    utts = inputs_to_utterances(args.inputs, needed) if args.inputs else None  # bad input fails before loading
    lexicon = read_lexicon(args.lexicon) if args.lexicon else None
    model, tokenizer, meta = load_model(args.model, args.device)
    if utts is None:
        from anemone_speech.synth import SynthConfig, cached_corpus

        default = str(cached_corpus(SynthConfig()) / "test.jsonl")
        print(f"no FILES_OR_MANIFEST given: using {default}", file=sys.stderr)
        utts = inputs_to_utterances([default], needed)
    bar = iter(progress(total=len(utts), description=args.verb))

    def advance(n: int) -> None:
        for _ in range(n):
            next(bar, None)

    out = transcribe_utterances(model, tokenizer, utts, args.batch_size, args.beam_size,
                                meta["model"].get("sample_rate", 16_000), on_batch=advance, lexicon=lexicon)
    next(bar, None)  # close the bar
    if args.output:
        write_manifest(args.output, [Utterance(r["audio_filepath"], r["duration"], r["text"]) for r in out["results"]],
                       relative=False)
    return out


def _transcribe(args: argparse.Namespace) -> int:
    from anemone_core.cli import print_json

    out = _run_inference(args)
    if args.json:
        print_json(out)
    else:
        for r in out["results"]:
            print(r["text"] if len(out["results"]) == 1 else f"{r['audio_filepath']}\t{r['text']}")
        s = out["summary"]
        print(f"{s['files']} file(s), {s['audio_seconds']} s of audio, RTFx {s['rtfx']}", file=sys.stderr)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from anemone_core.cli import print_json, print_table
    from anemone_core.errors import AnemoneError

    out = _run_inference(args)
    s = out["summary"]
    if "wer" not in s:
        raise AnemoneError("evaluate needs references: the inputs have no `text` field; pass a manifest with text")
    if args.json:
        print_json(s)
    else:
        print_table(f"anemone speech evaluate ({args.model})", ["metric", "value"], [[k, v] for k, v in s.items()])
    return 0
