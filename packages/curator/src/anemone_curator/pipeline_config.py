"""Typed pipeline configs: one pydantic model per stage, a pipeline is a list of them (YAML or Python).

```yaml
input: [data/*.jsonl.gz]
output: curated
stages:
  - {stage: langid, languages: [en]}
  - {stage: gopher_quality}
  - {stage: fuzzy_dedup, bands: 20, rows: 6}
  - {stage: tokenize}
```
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from anemone_core.config import AnemoneConfig


class LengthConfig(AnemoneConfig):
    stage: Literal["length"] = "length"
    min_chars: int = Field(1, ge=0)
    """Drop documents with fewer characters."""
    max_chars: int = Field(1_000_000, ge=1)
    """Drop documents with more characters."""


class GopherQualityConfig(AnemoneConfig):
    stage: Literal["gopher_quality"] = "gopher_quality"
    min_doc_words: int = Field(50, ge=0)
    """Fewest non-punctuation words a document may have (Gopher: 50)."""
    max_doc_words: int = Field(100_000, ge=1)
    """Most non-punctuation words (Gopher: 100,000)."""
    min_avg_word_length: float = Field(3.0, ge=0)
    """Lowest mean word length in characters (Gopher: 3)."""
    max_avg_word_length: float = Field(10.0, ge=0)
    """Highest mean word length (Gopher: 10)."""
    max_symbol_word_ratio: float = Field(0.1, ge=0)
    """Most '#' or ellipses per word (Gopher: 0.1)."""
    max_bullet_lines_ratio: float = Field(0.9, ge=0, le=1)
    """Most lines starting with a bullet (Gopher: 0.9)."""
    max_ellipsis_lines_ratio: float = Field(0.3, ge=0, le=1)
    """Most lines ending with an ellipsis (Gopher: 0.3)."""
    min_alpha_words_ratio: float = Field(0.8, ge=0, le=1)
    """Fewest words holding a letter (Gopher: 0.8)."""
    min_stop_words: int = Field(2, ge=0)
    """Fewest English stop words: the, be, to, of, and, that, have, with (Gopher: 2)."""


class GopherRepetitionConfig(AnemoneConfig):
    stage: Literal["gopher_repetition"] = "gopher_repetition"
    dup_line_frac: float = Field(0.3, ge=0, le=1)
    """Most lines that repeat an earlier line (Gopher: 0.3)."""
    dup_para_frac: float = Field(0.3, ge=0, le=1)
    """Most paragraphs that repeat an earlier paragraph (Gopher: 0.3)."""
    dup_line_char_frac: float = Field(0.2, ge=0, le=1)
    """Most characters in repeated lines (Gopher: 0.2)."""
    dup_para_char_frac: float = Field(0.2, ge=0, le=1)
    """Most characters in repeated paragraphs (Gopher: 0.2)."""
    top_n_grams: list[tuple[int, float]] = [(2, 0.2), (3, 0.18), (4, 0.16)]
    """(n, most characters covered by the most frequent n-gram) (Gopher)."""
    dup_n_grams: list[tuple[int, float]] = [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)]
    """(n, most characters in repeated n-grams) (Gopher)."""


class C4QualityConfig(AnemoneConfig):
    stage: Literal["c4_quality"] = "c4_quality"
    min_num_sentences: int = Field(5, ge=0)
    """Fewest sentences left after line filtering (C4: 5)."""
    min_words_per_line: int = Field(3, ge=0)
    """Lines with fewer words are removed (C4: 3)."""
    max_word_length: int = Field(1000, ge=1)
    """Lines holding a longer word are removed (C4: 1000)."""
    remove_citations: bool = True
    """Strip wiki citation marks like [1] and [edit]."""
    filter_no_terminal_punct: bool = True
    """Remove lines not ending in terminal punctuation."""
    filter_lorem_ipsum: bool = True
    """Drop documents containing 'lorem ipsum'."""
    filter_javascript: bool = True
    """Remove lines mentioning javascript."""
    filter_curly_bracket: bool = True
    """Drop documents containing '{' (code)."""
    filter_policy: bool = True
    """Remove cookie and privacy policy lines."""


class FineWebQualityConfig(AnemoneConfig):
    stage: Literal["fineweb_quality"] = "fineweb_quality"
    line_punct_thr: float = Field(0.12, ge=0, le=1)
    """Fewest lines ending in punctuation (FineWeb: 0.12)."""
    line_punct_exclude_zero: bool = False
    """Keep documents where no line ends in punctuation."""
    short_line_thr: float = Field(0.67, ge=0, le=1)
    """Most short lines (FineWeb: 0.67)."""
    short_line_length: int = Field(30, ge=1)
    """A line of at most this many characters is short (FineWeb: 30)."""
    char_duplicates_ratio: float = Field(0.01, ge=0, le=1)
    """Most characters in repeated lines (FineWeb: 0.01)."""
    new_line_ratio: float = Field(0.3, ge=0)
    """Most newlines per word (FineWeb: 0.3)."""


class LanguageIdConfig(AnemoneConfig):
    stage: Literal["langid"] = "langid"
    languages: list[str] | None = ["en"]
    """Keep only these ISO 639-1 codes; null keeps every language (the score is still recorded)."""
    min_score: float = Field(0.65, ge=0, le=1)
    """Lowest language probability to keep."""


class PiiConfig(AnemoneConfig):
    stage: Literal["pii"] = "pii"
    redact: bool = True
    """Replace each span with <EMAIL>, <PHONE>, <IP_ADDRESS>, <CREDIT_CARD>; false only counts."""
    kinds: list[Literal["email", "phone", "ip_address", "credit_card"]] | None = None
    """Which kinds to look for; null = all four."""


class ExactDedupConfig(AnemoneConfig):
    stage: Literal["exact_dedup"] = "exact_dedup"


class FuzzyDedupConfig(AnemoneConfig):
    stage: Literal["fuzzy_dedup"] = "fuzzy_dedup"
    bands: int = Field(20, ge=1)
    """LSH bands; P(candidate | Jaccard J) = 1 - (1 - J^rows)^bands."""
    rows: int = Field(6, ge=1)
    """Signature values per band; bands x rows MinHash permutations in all."""
    ngram: int = Field(5, ge=1)
    """Word n-gram size of the shingles."""
    seed: int = 1
    """Seed of the hash permutations."""
    verify: float | None = Field(0.7, ge=0, le=1)
    """Join a candidate pair only if its signatures agree on at least this share of positions (an estimate
    of its Jaccard); null joins every LSH candidate (the raw S-curve)."""
    partitions: int = Field(1, ge=1)
    """Split each band's keys into this many hash partitions: peak memory ~16 bytes x docs / partitions."""


class TokenizeConfig(AnemoneConfig):
    stage: Literal["tokenize"] = "tokenize"
    tokenizer: str | None = None
    """A Hugging Face tokenizer folder; null = the embedded SmolLM2-135M-Instruct's."""
    append_eos: bool = True
    """Append the EOS id to every document."""

    @model_validator(mode="after")
    def _check_folder(self) -> TokenizeConfig:
        if self.tokenizer is not None:
            from pathlib import Path

            folder = Path(self.tokenizer).expanduser()
            if not folder.is_dir() or not any(folder.glob("tokenizer*.json")):
                raise ValueError(
                    f"tokenizer = {self.tokenizer!r} is not a Hugging Face tokenizer folder (no tokenizer*.json): "
                    "give a model or tokenizer folder, or null for the embedded SmolLM2-135M-Instruct"
                )
        return self


StageConfig = Annotated[
    LengthConfig
    | GopherQualityConfig
    | GopherRepetitionConfig
    | C4QualityConfig
    | FineWebQualityConfig
    | LanguageIdConfig
    | PiiConfig
    | ExactDedupConfig
    | FuzzyDedupConfig
    | TokenizeConfig,
    Field(discriminator="stage"),
]


def default_stages() -> list[StageConfig]:
    return [
        LanguageIdConfig(),
        GopherQualityConfig(),
        GopherRepetitionConfig(),
        C4QualityConfig(),
        FineWebQualityConfig(),
        PiiConfig(),
        ExactDedupConfig(),
        FuzzyDedupConfig(),
        TokenizeConfig(),
    ]


class ExecutorConfig(AnemoneConfig):
    kind: Literal["local", "ray"] = "local"
    """local: a process pool on this machine; ray: Ray tasks (a local Ray unless `address` is set)."""
    workers: int = Field(0, ge=0)
    """Parallel shards; 0 = every core. local with 1 runs in this process."""
    address: str | None = None
    """Ray cluster address (ray://host:10001 or auto); null starts a local Ray."""


class PipelineConfig(AnemoneConfig):
    input: list[str] = []
    """Files, folders or globs of JSONL (.jsonl, .gz, .zst) or Parquet; empty = the embedded sample corpus."""
    output: str = "curated"
    """Output folder: kept/, rejects/, duplicates/, tokens.bin/.idx, stats.json."""
    text_field: str = "text"
    """The record field holding the text."""
    id_field: str = "id"
    """The record field holding the document id; absent -> `<file stem>/<line>`."""
    output_format: Literal["jsonl.gz", "jsonl", "jsonl.zst", "parquet"] = "jsonl.gz"
    """Format of the kept and rejected shards."""
    shard_lines: int | None = Field(None, ge=1)
    """Split each JSONL input into shards of this many lines (parallel work inside one big file); null = one
    shard per file. Parquet files stay one shard each."""
    batch_size: int = Field(256, ge=1)
    """Documents per batch through the stages."""
    keep_work: bool = False
    """Keep the intermediate .work/ folder (fingerprints, per-segment shards) after success."""
    executor: ExecutorConfig = ExecutorConfig()
    stages: list[StageConfig] = Field(default_factory=default_stages)
    """The stages in order; dedup stages see every shard at once."""

    @model_validator(mode="after")
    def _check_stages(self) -> PipelineConfig:
        names = [s.stage for s in self.stages]
        if "tokenize" in names and names.index("tokenize") != len(names) - 1:
            raise ValueError(f"stages = {names}: tokenize must be the last stage; move it to the end")
        if self.executor.address and self.executor.kind != "ray":
            raise ValueError(
                f"executor.address = {self.executor.address!r} needs executor.kind = 'ray' "
                f"(got {self.executor.kind!r}): set executor.kind=ray"
            )
        return self
