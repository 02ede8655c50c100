"""The stage table: config name -> class, and the split of a pipeline into segments at each dedup stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anemone_curator.dedup import DedupStage, ExactDedup, FuzzyDedup
from anemone_curator.filters import C4Quality, FineWebQuality, GopherQuality, GopherRepetition, LengthFilter
from anemone_curator.langid import LanguageId
from anemone_curator.pii import PiiRedactor
from anemone_curator.stage import Stage
from anemone_curator.tokens import Tokenize

STAGES: dict[str, type[Stage] | type[DedupStage]] = {
    "length": LengthFilter,
    "gopher_quality": GopherQuality,
    "gopher_repetition": GopherRepetition,
    "c4_quality": C4Quality,
    "fineweb_quality": FineWebQuality,
    "langid": LanguageId,
    "pii": PiiRedactor,
    "exact_dedup": ExactDedup,
    "fuzzy_dedup": FuzzyDedup,
    "tokenize": Tokenize,
}


def build_stage(cfg: Any) -> Stage | DedupStage:
    """A stage config (pydantic model or its dict) -> the stage object, its fields passed as plain kwargs."""
    data = cfg if isinstance(cfg, dict) else cfg.model_dump()
    kwargs = {k: v for k, v in data.items() if k != "stage"}
    return STAGES[data["stage"]](**kwargs)


@dataclass
class Segment:
    """Per-document stages run shard by shard, then optionally one dedup stage that needs all shards.

    `index` numbers the segment; `stage_keys` name each stage uniquely (`03_fuzzy_dedup`) for the stats.
    """

    index: int
    stages: list[dict[str, Any]]
    stage_keys: list[str]
    dedup: dict[str, Any] | None
    dedup_key: str | None


def plan_segments(stage_cfgs: list[Any]) -> list[Segment]:
    segments: list[Segment] = []
    current: list[dict[str, Any]] = []
    keys: list[str] = []
    for i, cfg in enumerate(stage_cfgs):
        data = cfg if isinstance(cfg, dict) else cfg.model_dump()
        key = f"{i:02d}_{data['stage']}"
        if issubclass(STAGES[data["stage"]], DedupStage):
            segments.append(Segment(len(segments), current, keys, data, key))
            current, keys = [], []
        else:
            current.append(data)
            keys.append(key)
    segments.append(Segment(len(segments), current, keys, None, None))
    return segments
