"""End to end on a handful of eSpeak utterances: synth -> train (a few Lightning steps) -> saved folder -> CLI."""

import argparse
import json
import shutil

import pytest
import soundfile as sf

from anemone_core.cli import _fail
from anemone_core.config import load_config
from anemone_core.errors import AnemoneError
from anemone_speech.cli import register
from anemone_speech.config import SpeechTrainConfig
from anemone_speech.model_io import load_model
from anemone_speech.synth import SynthConfig, plan_corpus, synthesize
from anemone_speech.train import train

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="the espeak-ng program is not installed (apt-get install -y espeak-ng)")


def run_cli(argv: list[str]) -> int:
    """`anemone speech ...` as the `anemone` command runs it (AnemoneError -> message, exit 2)."""
    parser = argparse.ArgumentParser(prog="anemone speech")
    register(parser)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AnemoneError as exc:
        return _fail(str(exc))


def test_plan_holds_out_sentences_and_voices():
    cfg = SynthConfig(num_train=200, num_validation=20, num_test=20)
    plan = plan_corpus(cfg)
    train_text = {u["text"] for u in plan["train"]}
    train_voices = {u["voice"] for u in plan["train"]}
    assert not train_text & {u["text"] for u in plan["test"] + plan["validation"]}
    assert not train_voices & {u["voice"] for u in plan["test"]}
    assert plan == plan_corpus(cfg)  # deterministic


def test_time_budget_ends_the_learning_rate_schedule():
    import time

    from anemone_speech.conformer import ConformerCTC
    from anemone_speech.lightning_module import CTCModule, warmup_cosine
    from anemone_speech.tokenizers import CharTokenizer

    tok = CharTokenizer(list("ab "))
    module = CTCModule(ConformerCTC(tok.vocab_size, d_model=16, n_layers=1, n_heads=2, subsampling_channels=4),
                       tok, min_lr_ratio=0.05, max_seconds=100.0)
    assert module.lr_multiplier(50, 10, 1000) == pytest.approx(warmup_cosine(50, 10, 1000, 0.05))  # not started
    module._fit_t0 = time.monotonic() - 100.0  # the whole budget used at step 50: the cosine is at its end
    assert module.lr_multiplier(50, 10, 1000) == pytest.approx(0.05)
    module._fit_t0 = time.monotonic() - 50.0  # half the budget: about the cosine's middle
    assert module.lr_multiplier(50, 10, 1000) == pytest.approx(warmup_cosine(500, 10, 1000, 0.05), abs=0.01)
    assert module.lr_multiplier(5, 10, 1000) == pytest.approx(0.6)  # warmup goes by steps only


def test_synth_config_rejects_seen_test_voice():
    with pytest.raises(AnemoneError, match="shares its accent or variant"):
        load_config(SynthConfig, None, ["test_voices=[en-us+m9]"])


def test_every_verb_answers_help(capsys):
    for verb in ("synth", "train", "transcribe", "evaluate"):
        with pytest.raises(SystemExit) as exc:
            run_cli([verb, "--help"])
        assert exc.value.code == 0
    assert "model.preset" in capsys.readouterr().out


def test_missing_model_folder_is_a_clear_error(tmp_path, capsys):
    assert run_cli(["transcribe", "x.wav", "--model", str(tmp_path / "none")]) == 2
    assert "not a speech model folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("the espeak-ng program is not installed (apt-get install -y espeak-ng)")
    out = tmp_path_factory.mktemp("corpus")
    synthesize(SynthConfig(num_train=24, num_validation=6, num_test=6, seed=3), out, show_progress=False)
    return out


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    cfg = load_config(SpeechTrainConfig, None, [
        f"output_dir={run}", f"data.train_manifest={corpus / 'train.jsonl'}",
        f"data.validation_manifest={corpus / 'validation.jsonl'}", f"data.test_manifest={corpus / 'test.jsonl'}",
        "model.preset=tiny", "tokenizer.kind=char", "trainer.max_epochs=2", "data.batch_size=8",
        "trainer.threads=1", "data.speed_perturb=[0.9,1.0,1.1]",
    ])
    return train(cfg, show_progress=False)


@needs_espeak
def test_synth_writes_manifests_and_audio(corpus):
    lines = [json.loads(x) for x in (corpus / "test.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and {"audio_filepath", "duration", "text", "voice"} <= set(lines[0])
    info = sf.info(str(corpus / lines[0]["audio_filepath"]))
    assert info.samplerate == 16000 and abs(info.duration - lines[0]["duration"]) < 1e-3


@needs_espeak
def test_train_saves_a_loadable_model_and_scores_the_test_split(trained, tmp_path):
    assert trained["steps"] == 6 and trained["epochs"] == 2
    assert 0.0 <= trained["test"]["wer"] and trained["test"]["rtfx"] > 0
    assert trained["test_lexicon"]["files"] == 6 and trained["test_lexicon"]["beam_size"] == 32
    assert trained["train_cpu_seconds"] > 0 and "start" in trained["load_average"]
    run = trained["output_dir"]
    model, tok, cfg = load_model(f"{run}/model")
    assert tok.kind == "char" and cfg["model"]["d_model"] == 32
    from pathlib import Path

    assert (Path(run) / "logs" / "metrics.csv").is_file() and (Path(run) / "config.yaml").is_file()
    assert list((Path(run) / "checkpoints").glob("best-*.ckpt"))
    with pytest.raises(AnemoneError, match="already exists"):
        train(load_config(SpeechTrainConfig, None, [f"output_dir={run}"]), show_progress=False)


@needs_espeak
def test_transcribe_cli_resamples_and_reports_errors(trained, corpus, tmp_path, capsys):
    model = f"{trained['output_dir']}/model"
    wav, sr = sf.read(str(corpus / "wavs" / "test_000000.wav"))
    import torch

    from anemone_speech.audio import resample

    odd = tmp_path / "at_22k.wav"
    sf.write(odd, resample(torch.from_numpy(wav).float(), sr, 22050).numpy(), 22050)
    assert run_cli(["transcribe", str(odd), "--model", model, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["results"][0]["duration"] == pytest.approx(len(wav) / sr, abs=0.01)
    assert run_cli(["evaluate", str(corpus / "test.jsonl"), "--model", model, "--json",
                    "--beam-size", "4", "--output", str(tmp_path / "hyp.jsonl")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"wer", "cer", "rtfx"} <= set(summary) and (tmp_path / "hyp.jsonl").is_file()

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"audio_filepath": str(odd)}) + "\n")
    assert run_cli(["evaluate", str(bad), "--model", model]) == 2
    assert "line 1: missing field(s) text" in capsys.readouterr().err
    (tmp_path / "empty.wav").write_bytes(b"")
    assert run_cli(["transcribe", str(tmp_path / "empty.wav"), "--model", model]) == 2
    assert "empty.wav' is empty" in capsys.readouterr().err
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot audio at all")
    assert run_cli(["transcribe", str(tmp_path / "corrupt.wav"), "--model", model]) == 2
    assert "corrupt.wav' could not be decoded" in capsys.readouterr().err
    assert run_cli(["transcribe", str(tmp_path / "missing.wav"), "--model", model]) == 2
    assert "missing.wav' does not exist" in capsys.readouterr().err


@needs_espeak
def test_lexicon_decoding_from_the_training_manifest(trained, corpus, capsys):
    model = f"{trained['output_dir']}/model"
    argv = ["evaluate", str(corpus / "test.jsonl"), "--model", model, "--lexicon", str(corpus / "train.jsonl")]
    assert run_cli([*argv, "--beam-size", "4", "--output", str(corpus.parent / "lex.jsonl"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == 6
    words = {w for line in (corpus / "train.jsonl").read_text().splitlines() for w in json.loads(line)["text"].split()}
    hyps = [json.loads(line)["text"] for line in (corpus.parent / "lex.jsonl").read_text().splitlines()]
    assert all(w in words for h in hyps for w in h.split())  # every word spelt is a lexicon word
    assert run_cli(argv) == 2  # greedy (beam size 1) cannot take a lexicon
    assert "--beam-size 8" in capsys.readouterr().err


@needs_espeak
def test_fine_tune_from_a_saved_model(trained, corpus, tmp_path):
    cfg = load_config(SpeechTrainConfig, None, [
        f"output_dir={tmp_path / 'ft'}", f"init_from={trained['model_dir']}",
        f"data.train_manifest={corpus / 'train.jsonl'}", f"data.validation_manifest={corpus / 'validation.jsonl'}",
        "trainer.max_epochs=1", "data.batch_size=8", "trainer.threads=1",
    ])
    results = train(cfg, show_progress=False)
    assert results["parameters"] == trained["parameters"] and results["init_from"] == trained["model_dir"]
    with pytest.raises(AnemoneError, match="init_from"):
        load_config(SpeechTrainConfig, None, [f"init_from={tmp_path / 'nothing'}"])
