"""`anemone speech train`: Conformer-CTC on manifests with PyTorch Lightning, best-WER model saved as a folder.

CPU, defaults (synthesizes the eSpeak corpus on first use):   anemone speech train --json
A recipe with overrides:                                      anemone speech train -c conf.yaml trainer.max_epochs=30
Multi-GPU (Lightning DDP):                                    anemone speech train trainer.accelerator=gpu trainer.devices=4
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from anemone_core.errors import AnemoneError
from anemone_core.io import atomic_dir, atomic_write_text
from anemone_core.metrics import write_run_config
from anemone_speech.config import SpeechTrainConfig
from anemone_speech.manifest import Utterance, filter_by_duration, read_manifest
from anemone_speech.text import normalize_text


def _rank() -> int:
    """This process's rank under Lightning's DDP launcher (which sets LOCAL_RANK in the processes it starts)."""
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


@contextlib.contextmanager
def _run_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """Rank 0 writes the run atomically; other DDP ranks get a scratch folder (Lightning saves from rank 0)."""
    if _rank() == 0:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            yield tmp
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system): unlike wall time, load-independent."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _load_average() -> float | None:
    """1-minute load average (None where the OS has none): the machine's load beside the wall-clock figures."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def resolve_manifests(cfg: SpeechTrainConfig, show_progress: bool = True) -> dict[str, str | None]:
    """The train/validation/test manifest paths, synthesizing the default corpus when none is given."""
    d = cfg.data
    if d.train_manifest is not None:
        return {"train": d.train_manifest, "validation": d.validation_manifest, "test": d.test_manifest}
    from anemone_speech.synth import cached_corpus, corpus_folder

    if _rank() == 0:
        corpus = cached_corpus(d.synth, show_progress)
    else:  # rank 0 synthesizes; the others wait for its atomic rename instead of racing it
        corpus = corpus_folder(d.synth)
        while not (corpus / "test.jsonl").is_file():
            time.sleep(2)
    return {"train": str(corpus / "train.jsonl"), "validation": str(corpus / "validation.jsonl"),
            "test": d.test_manifest or str(corpus / "test.jsonl")}


def load_splits(cfg: SpeechTrainConfig, paths: dict[str, str | None]) -> dict[str, list[Utterance]]:
    splits = {k: read_manifest(p) for k, p in paths.items() if p}
    kept = filter_by_duration(splits["train"], cfg.data.min_duration, cfg.data.max_duration)
    if not kept:
        raise AnemoneError(f"data.min_duration={cfg.data.min_duration} / data.max_duration={cfg.data.max_duration} "
                           f"leave none of the {len(splits['train'])} training utterances in {paths['train']}: widen them")
    splits["train"] = kept
    return splits


def build_trainer(cfg: SpeechTrainConfig, run_dir: Path, show_progress: bool):
    """Lightning Trainer with best-WER checkpointing, early stopping, clipping, CSV + TensorBoard logs."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    t = cfg.trainer
    callbacks: list[Any] = [
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best-{epoch}-{val_wer:.4f}", monitor="val_wer",
                        mode="min", save_top_k=1, save_last=True),
        EarlyStopping(monitor="val_wer", mode="min", patience=t.early_stopping_patience),
    ]
    if show_progress:  # progress goes to stderr so `--json` keeps stdout clean
        callbacks.append(RichProgressBar(leave=True, console_kwargs={"stderr": True}))
    strategy = "ddp" if t.devices > 1 else "auto"
    return pl.Trainer(
        max_epochs=t.max_epochs, max_steps=t.max_steps, max_time=timedelta(minutes=t.max_minutes) if t.max_minutes else None,
        accelerator=t.accelerator, devices=t.devices, strategy=strategy, precision=t.precision,
        gradient_clip_val=t.gradient_clip_val or None, val_check_interval=t.val_check_interval,
        log_every_n_steps=t.log_every_n_steps, callbacks=callbacks, enable_progress_bar=show_progress,
        enable_model_summary=False, use_distributed_sampler=False,  # our bucket sampler shards itself
        logger=[CSVLogger(run_dir, name="logs", version=""), TensorBoardLogger(run_dir, name="logs", version="tb")],
        default_root_dir=run_dir, num_sanity_val_steps=0,
    )


def train(cfg: SpeechTrainConfig, overwrite: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Train, restore the best-WER weights, score the test manifest, save `<output_dir>/model`. Returns results."""
    import pytorch_lightning as pl

    from anemone_speech.conformer import ConformerCTC
    from anemone_speech.data import SpeechDataModule
    from anemone_speech.lightning_module import CTCModule
    from anemone_speech.model_io import load_model, save_model
    from anemone_speech.tokenizers import build_tokenizer
    from anemone_speech.transcribe import transcribe_utterances

    out = Path(cfg.output_dir).expanduser().absolute()
    if out.exists() and not overwrite and _rank() == 0:  # fail before minutes of work, not after
        raise AnemoneError(f"output_dir {out} already exists: pass --overwrite or set output_dir=<new folder>")
    torch.set_num_threads(cfg.trainer.threads)
    paths = resolve_manifests(cfg, show_progress)
    splits = load_splits(cfg, paths)
    pl.seed_everything(cfg.seed, verbose=False)

    if cfg.init_from:  # fine-tune: the saved model's architecture, weights and tokenizer
        model, tokenizer, init_cfg = load_model(cfg.init_from)
        model.train()
        model_kwargs = init_cfg["model"]
    else:
        tokenizer = build_tokenizer(cfg.tokenizer.kind, [normalize_text(u.text) for u in splits["train"]],
                                    cfg.tokenizer.vocab_size)
        model_kwargs = {**cfg.model.kwargs(), "sample_rate": cfg.data.sample_rate}
        model = ConformerCTC(vocab_size=tokenizer.vocab_size, **model_kwargs)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Conformer-CTC: {n_params / 1e6:.2f}M parameters, {tokenizer.kind} tokenizer of {tokenizer.vocab_size}, "
          f"{len(splits['train'])} training utterances", file=sys.stderr)
    module = CTCModule(model, tokenizer, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.warmup_steps,
                       cfg.optim.min_lr_ratio, cfg.augment.model_dump(), cfg.data.sample_rate,
                       cfg.trainer.max_minutes * 60 if cfg.trainer.max_minutes else None)
    dm = SpeechDataModule(splits["train"], splits["validation"], tokenizer, cfg.data.batch_size, cfg.data.num_buckets,
                          cfg.data.num_workers, cfg.data.sample_rate, cfg.data.speed_perturb, cfg.seed)

    with _run_folder(out, overwrite) as run_dir:
        write_run_config(run_dir, cfg)
        trainer = build_trainer(cfg, run_dir, show_progress)
        t0, cpu0, load0 = time.perf_counter(), _cpu_seconds(), _load_average()
        trainer.fit(module, datamodule=dm)
        train_s, train_cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        if not trainer.is_global_zero:
            return {}
        ckpt = trainer.checkpoint_callback.best_model_path
        if ckpt:  # our own checkpoint, read without unpickling arbitrary objects
            state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
        save_model(run_dir / "model", model.cpu(), model_kwargs, tokenizer,
                   {"best_val_wer": float(trainer.checkpoint_callback.best_model_score or float("nan"))})
        results: dict[str, Any] = {
            "output_dir": str(out), "model_dir": str(out / "model"), "parameters": n_params,
            "epochs": trainer.current_epoch, "steps": trainer.global_step, "train_seconds": round(train_s, 1),
            "train_cpu_seconds": round(train_cpu, 1), "load_average": {"start": load0, "end": _load_average()},
            "train_audio_seconds_per_second": round(module.audio_seconds / max(module.train_seconds, 1e-9), 1),
            "best_val_wer": float(trainer.checkpoint_callback.best_model_score or float("nan")),
            "threads": cfg.trainer.threads, "manifests": paths, "init_from": cfg.init_from,
        }
        if "test" in splits:  # score the saved folder itself: what `anemone speech evaluate` will see
            saved, tok, _ = load_model(run_dir / "model")
            scored = transcribe_utterances(saved, tok, splits["test"], cfg.data.batch_size, cfg.trainer.beam_size,
                                           cfg.data.sample_rate)
            results["test"] = scored["summary"]
            if cfg.trainer.lexicon_beam_size > 1 and tok.kind == "char":
                words = sorted({w for u in splits["train"] for w in normalize_text(u.text).split()})
                scored = transcribe_utterances(saved, tok, splits["test"], cfg.data.batch_size,
                                               cfg.trainer.lexicon_beam_size, cfg.data.sample_rate, lexicon=words)
                results["test_lexicon"] = {**scored["summary"], "beam_size": cfg.trainer.lexicon_beam_size,
                                           "lexicon_words": len(words)}
        atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2))
    return results
