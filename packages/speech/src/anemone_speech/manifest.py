"""NeMo-style manifests: one JSON object per line with `audio_filepath`, `duration` and `text`.

Relative audio paths are resolved against the manifest's folder, so a corpus folder can be moved whole.
Every problem names the manifest, the line number and the fix.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from anemone_core.errors import AnemoneError
from anemone_core.io import atomic_write_text

REQUIRED = ("audio_filepath", "duration", "text")


@dataclass(frozen=True)
class Utterance:
    audio_filepath: str  # absolute path
    duration: float  # seconds
    text: str
    extra: tuple[tuple[str, object], ...] = ()  # any other fields of the line (voice, speaker...), kept in order

    def to_json(self, relative_to: Path | None = None) -> dict:
        path = Path(self.audio_filepath)
        if relative_to is not None and path.is_relative_to(relative_to):
            path = path.relative_to(relative_to)
        return {"audio_filepath": str(path), "duration": round(self.duration, 4), "text": self.text, **dict(self.extra)}


def _parse_line(raw: str, where: str, base: Path, needed: tuple[str, ...]) -> Utterance:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise AnemoneError(f"{where}: not valid JSON ({exc.msg}): each line must be one JSON object like "
                           '{"audio_filepath": "a.wav", "duration": 1.5, "text": "hello"}') from None
    if not isinstance(obj, dict):
        raise AnemoneError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in needed if k not in obj]
    if missing:
        hint = "; compute duration with soundfile.info(path).duration" if "duration" in missing else ""
        raise AnemoneError(f"{where}: missing field(s) {', '.join(missing)} (every line needs "
                           f"{', '.join(needed)}): add them{hint}")
    path = obj["audio_filepath"]
    if not isinstance(path, str) or not path:
        raise AnemoneError(f"{where}: audio_filepath = {path!r} must be a non-empty string path")
    duration = obj.get("duration", -1.0)
    if not isinstance(duration, int | float) or isinstance(duration, bool) or ("duration" in needed and duration <= 0):
        raise AnemoneError(f"{where}: duration = {duration!r} must be a positive number of seconds")
    text = obj.get("text", "")
    if not isinstance(text, str):
        raise AnemoneError(f"{where}: text = {text!r} must be a string")
    full = Path(path).expanduser()
    if not full.is_absolute():
        full = base / full
    extra = tuple((k, v) for k, v in obj.items() if k not in REQUIRED)
    return Utterance(str(full), float(duration), text, extra)


def read_manifest(path: str | Path, needed: tuple[str, ...] = REQUIRED) -> list[Utterance]:
    """Parse a manifest; a line lacking a `needed` field, or holding a bad value, raises an AnemoneError naming
    the file and line number. Transcription needs only audio_filepath; scoring needs text too."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise AnemoneError(f"manifest '{p}' not found: pass a JSON-lines manifest (make one with `anemone speech synth`)")
    base = p.absolute().parent
    out = []
    with p.open(encoding="utf-8") as fh:
        for i, raw in enumerate(fh, start=1):
            if raw.strip():
                out.append(_parse_line(raw, f"manifest {p} line {i}", base, needed))
    if not out:
        raise AnemoneError(f"manifest '{p}' has no entries: add one JSON object per line")
    return out


def write_manifest(path: str | Path, utterances: Iterable[Utterance], relative: bool = True) -> Path:
    """Write atomically; with `relative`, audio paths under the manifest's folder are stored relative."""
    p = Path(path).absolute()
    base = p.parent if relative else None
    lines = [json.dumps(u.to_json(base)) for u in utterances]
    return atomic_write_text(p, "\n".join(lines) + "\n")


def filter_by_duration(utts: list[Utterance], min_s: float = 0.0, max_s: float = float("inf")) -> list[Utterance]:
    return [u for u in utts if min_s <= u.duration <= max_s]


class BucketBatchSampler:
    """Batches of similar duration (less padding): sort by length, cut into batches, shuffle the batches.

    Shards itself across `num_replicas` ranks (give Lightning `use_distributed_sampler=False`); every rank
    gets the same number of batches so DDP never waits on a rank that ran out.
    """

    def __init__(self, durations: list[float], batch_size: int, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, num_buckets: int = 8) -> None:
        self.durations, self.batch_size, self.shuffle, self.seed = durations, batch_size, shuffle, seed
        self.num_replicas, self.rank, self.num_buckets, self.epoch = num_replicas, rank, max(1, num_buckets), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        order = sorted(range(len(self.durations)), key=lambda i: self.durations[i])
        # buckets hold whole batches, so bucketing never leaves a batch short (except the last)
        size = -(-len(order) // self.num_buckets)
        size = -(-size // self.batch_size) * self.batch_size
        buckets = [order[i : i + size] for i in range(0, len(order), size)]
        batches = []
        for bucket in buckets:
            if self.shuffle:
                rng.shuffle(bucket)  # mix within a bucket: similar lengths, different batches each epoch
            batches += [bucket[i : i + self.batch_size] for i in range(0, len(bucket), self.batch_size)]
        if self.shuffle:
            rng.shuffle(batches)
        per_rank = len(batches) // self.num_replicas if self.num_replicas > 1 else len(batches)
        return batches[self.rank :: self.num_replicas][:per_rank]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        self.epoch += 1 if self.shuffle else 0
        return iter(batches)

    def __len__(self) -> int:
        return len(self._batches())
