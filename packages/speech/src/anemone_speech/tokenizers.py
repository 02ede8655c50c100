"""ASR tokenizers: characters, or SentencePiece BPE trained from the training manifest; saved with the model.

Ids are 0..vocab_size-1; the CTC blank is `vocab_size` (the last output of the model, as in NeMo).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from anemone_core.errors import AnemoneError


class Tokenizer(Protocol):
    kind: str

    @property
    def vocab_size(self) -> int: ...
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def save(self, folder: Path) -> None: ...


class CharTokenizer:
    """One id per character seen in training text (after normalization); unknown characters are dropped."""

    kind = "char"

    def __init__(self, vocab: list[str]) -> None:
        self.vocab = vocab
        self.index = {c: i for i, c in enumerate(vocab)}

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        return cls(sorted({c for t in texts for c in t}))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text if c in self.index]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.vocab[i] for i in ids if 0 <= i < len(self.vocab))

    def save(self, folder: Path) -> None:
        (folder / "tokenizer.json").write_text(json.dumps({"type": "char", "vocab": self.vocab}), encoding="utf-8")


class BPETokenizer:
    """SentencePiece BPE (the tokenizer NeMo's FastConformer models use); the model file is saved as-is."""

    kind = "bpe"

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece as spm

        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        import sentencepiece as spm

        buf = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(list(texts)), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
                character_coverage=1.0, bos_id=-1, eos_id=-1, unk_id=0, minloglevel=2,
            )
        except RuntimeError as exc:
            raise AnemoneError(f"tokenizer.vocab_size = {vocab_size}: SentencePiece could not train a BPE "
                               f"vocabulary of that size on the training text ({exc}); lower tokenizer.vocab_size "
                               "or use tokenizer.kind=char") from None
        return cls(buf.getvalue())

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def save(self, folder: Path) -> None:
        (folder / "tokenizer.model").write_bytes(self.proto)
        (folder / "tokenizer.json").write_text(json.dumps({"type": "bpe"}), encoding="utf-8")


def build_tokenizer(kind: str, texts: Iterable[str], vocab_size: int = 128) -> CharTokenizer | BPETokenizer:
    if kind == "char":
        return CharTokenizer.train(texts)
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size)
    raise AnemoneError(f"tokenizer.kind = {kind!r} is not known: use 'char' or 'bpe'")


def load_tokenizer(folder: Path) -> CharTokenizer | BPETokenizer:
    meta = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    if meta.get("type") == "char":
        return CharTokenizer(meta["vocab"])
    if meta.get("type") == "bpe":
        return BPETokenizer((folder / "tokenizer.model").read_bytes())
    raise AnemoneError(f"{folder / 'tokenizer.json'}: unknown tokenizer type {meta.get('type')!r} (expected char or bpe)")
