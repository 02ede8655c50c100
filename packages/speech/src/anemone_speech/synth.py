"""`anemone speech synth`: an offline, synthetic speech corpus made with eSpeak NG.

Sentences are random draws from the embedded word list; each utterance gets a voice (accent + variant), a
speaking rate, a pitch, added white noise at a random SNR and a random gain. The test split holds sentences
never used in training *and* voices (accent and variant both) never heard in training, so its WER measures
generalization to new speakers and word sequences. This is synthetic speech, not human recordings.
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, model_validator

from anemone_core.config import AnemoneConfig
from anemone_core.errors import AnemoneError
from anemone_core.metrics import progress
from anemone_speech.audio import resample, write_audio
from anemone_speech.manifest import Utterance, write_manifest
from anemone_speech.words import WORDS


class SynthConfig(AnemoneConfig):
    out_dir: str = "speech_corpus"
    """Folder to write: wavs/ plus train.jsonl, validation.jsonl, test.jsonl manifests."""
    num_train: int = Field(4000, ge=1)
    """Training utterances."""
    num_validation: int = Field(150, ge=1)
    """Validation utterances (held-out sentences, training voices)."""
    num_test: int = Field(150, ge=1)
    """Test utterances (held-out sentences spoken by held-out voices)."""
    min_words: int = Field(3, ge=1)
    """Fewest words in a sentence."""
    max_words: int = Field(7, ge=1)
    """Most words in a sentence."""
    train_accents: list[str] = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc"]
    """eSpeak NG accents (voices) used for training and validation (`espeak-ng --voices=en`)."""
    train_variants: list[str] = ["m1", "m2", "m3", "m4", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "linda", "steph",
                                 "Annie"]
    """eSpeak NG variants (timbre) combined with the training accents (`espeak-ng --voices=variant`)."""
    test_voices: list[str] = ["en-gb-x-gbclan+m5", "en-gb-x-gbcwmd+f5"]
    """Held-out voices `accent+variant` for the test split; neither part may appear in training."""
    rate_wpm: tuple[int, int] = (140, 200)
    """Speaking rate range, words per minute."""
    pitch: tuple[int, int] = (30, 70)
    """Pitch range (eSpeak 0-99)."""
    snr_db: tuple[float, float] = (15.0, 40.0)
    """Signal-to-noise ratio range of the added white noise, dB."""
    gain_db: tuple[float, float] = (-10.0, 0.0)
    """Gain range applied after the noise, dB."""
    sample_rate: int = Field(16_000, ge=8000)
    """Sample rate of the written WAV files (eSpeak speaks at 22.05 kHz; we resample)."""
    seed: int = 0
    """Seed of every random choice: the same config gives the same corpus."""
    workers: int = Field(2, ge=1)
    """eSpeak processes run at once."""

    @model_validator(mode="after")
    def _check(self) -> SynthConfig:
        if self.max_words < self.min_words:
            raise ValueError(f"max_words={self.max_words} < min_words={self.min_words}: raise max_words")
        for voice in self.test_voices:
            accent, _, variant = voice.partition("+")
            if accent in self.train_accents or (variant and variant in self.train_variants):
                raise ValueError(f"test voice {voice!r} shares its accent or variant with training: pick an "
                                 "unseen accent and variant so the test measures new voices")
        return self


def espeak_binary() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise AnemoneError("the `espeak-ng` program is not installed, and `anemone speech synth` needs it: "
                           "run `apt-get install -y espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng`")
    return exe


def speak(text: str, voice: str, rate: int, pitch: int, sample_rate: int) -> torch.Tensor:
    """One sentence through eSpeak NG, returned as (N,) float32 at `sample_rate`."""
    import soundfile as sf

    cmd = [espeak_binary(), "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", text]
    proc = subprocess.run(cmd, capture_output=True, timeout=60)
    if proc.returncode != 0 or not proc.stdout:
        raise AnemoneError(f"espeak-ng failed for voice {voice!r}: {proc.stderr.decode(errors='replace').strip()}; "
                           "check the voice exists with `espeak-ng --voices=en`")
    data, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    return resample(torch.from_numpy(data), sr, sample_rate)


def degrade(wav: torch.Tensor, rng: np.random.Generator, snr_db: float, gain_db: float) -> torch.Tensor:
    """Add white noise at `snr_db` then scale by `gain_db`; (N,) -> (N,)."""
    power = wav.pow(2).mean().clamp_min(1e-10)
    noise = torch.from_numpy(rng.standard_normal(wav.shape[0]).astype(np.float32))
    noisy = wav + noise * torch.sqrt(power / 10 ** (snr_db / 10))
    out = noisy * 10 ** (gain_db / 20)
    return out / max(1.0, float(out.abs().max()))  # never clip


def _sentences(rng: random.Random, n: int, lo: int, hi: int, exclude: set[str]) -> list[str]:
    out: list[str] = []
    seen = set(exclude)
    while len(out) < n:
        s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def plan_corpus(cfg: SynthConfig) -> dict[str, list[dict]]:
    """Every utterance's text, voice and settings per split, decided up front from the seed."""
    rng = random.Random(cfg.seed)
    train_s = _sentences(rng, cfg.num_train, cfg.min_words, cfg.max_words, set())
    held = _sentences(rng, cfg.num_validation + cfg.num_test, cfg.min_words, cfg.max_words, set(train_s))
    train_voices = [f"{a}+{v}" for a in cfg.train_accents for v in cfg.train_variants]
    splits = {"train": (train_s, train_voices), "validation": (held[: cfg.num_validation], train_voices),
              "test": (held[cfg.num_validation :], cfg.test_voices)}
    plan: dict[str, list[dict]] = {}
    for split, (sentences, voices) in splits.items():
        plan[split] = [
            dict(text=s, voice=rng.choice(voices), rate=rng.randint(*cfg.rate_wpm), pitch=rng.randint(*cfg.pitch),
                 snr_db=round(rng.uniform(*cfg.snr_db), 1), gain_db=round(rng.uniform(*cfg.gain_db), 1),
                 noise_seed=rng.randrange(2**31), name=f"{split}_{i:06d}")
            for i, s in enumerate(sentences)
        ]
    return plan


def synthesize(cfg: SynthConfig, out: Path, show_progress: bool = True) -> dict[str, list[Utterance]]:
    """Write wavs/ and the three manifests into `out` (an existing folder). Returns the utterances per split."""
    espeak_binary()
    (out / "wavs").mkdir(parents=True, exist_ok=True)

    def make(item: dict) -> Utterance:
        wav = speak(item["text"], item["voice"], item["rate"], item["pitch"], cfg.sample_rate)
        wav = degrade(wav, np.random.default_rng(item["noise_seed"]), item["snr_db"], item["gain_db"])
        path = out / "wavs" / f"{item['name']}.wav"
        write_audio(path, wav, cfg.sample_rate)
        extra = tuple((k, item[k]) for k in ("voice", "rate", "pitch", "snr_db", "gain_db"))
        return Utterance(str(path), wav.shape[0] / cfg.sample_rate, item["text"], extra)

    result = {}
    with ThreadPoolExecutor(cfg.workers) as pool:  # eSpeak runs as a subprocess: threads overlap fine
        for split, items in plan_corpus(cfg).items():
            done = pool.map(make, items)
            bar = progress(done, total=len(items), description=f"synth {split}", disable=None if show_progress else True)
            result[split] = list(bar)
            write_manifest(out / f"{split}.jsonl", result[split])
    return result


def corpus_folder(cfg: SynthConfig) -> Path:
    """$ANEMONE_HOME/speech/synth-<hash of every setting that changes the audio>."""
    import hashlib

    from anemone_core.io import anemone_home

    key = hashlib.sha1(cfg.model_dump_json(exclude={"out_dir", "workers"}).encode()).hexdigest()[:12]
    return anemone_home() / "speech" / f"synth-{key}"


def cached_corpus(cfg: SynthConfig, show_progress: bool = True) -> Path:
    """The corpus for `cfg` under $ANEMONE_HOME/speech/, synthesized once (atomically) and reused after."""
    from anemone_core.io import atomic_dir

    folder = corpus_folder(cfg)
    if not (folder / "test.jsonl").is_file():
        with atomic_dir(folder, overwrite=True) as tmp:
            synthesize(cfg, tmp, show_progress)
    return folder
