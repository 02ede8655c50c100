"""Corpora built offline: the embedded sample corpus and synthetic near-duplicate corpora of known Jaccard.

The sample corpus is the docstrings of the Python standard library that runs Anemone (parsed with `ast`, never
imported; every interpreter ships them), reflowed into paragraphs like web text, plus planted material for
every path of the pipeline: near-duplicates (controlled word edits) and exact duplicates, documents carrying
PII, a few paragraphs in French, German and Spanish, and malformed records (bad JSON, a non-UTF-8 byte, empty
text, a missing text field). It is written once to `$ANEMONE_HOME/curator/sample-v1` in four shards
(.jsonl, .jsonl.gz, .jsonl.zst, .parquet).
"""

from __future__ import annotations

import ast
import functools
import json
import random
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from anemone_core.io import anemone_home, atomic_dir
from anemone_curator.formats import write_records
from anemone_curator.minhash import jaccard, shingle_set

VERSION = "sample-v1"
SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "tkinter", "__pycache__"}

FOREIGN = [
    (
        "fr",
        "La bibliothèque standard de Python contient de nombreux modules utiles pour le travail quotidien. "
        "On y trouve des outils pour lire et écrire des fichiers, pour manipuler des dates, pour communiquer sur "
        "le réseau et pour compresser des données. Chaque module est documenté avec soin, et la documentation "
        "explique comment utiliser les fonctions, quelles erreurs elles peuvent lever et dans quels cas il vaut "
        "mieux choisir une autre approche. Les développeurs apprécient cette richesse.",
    ),
    (
        "fr",
        "Le nettoyage des données est une étape essentielle avant l'entraînement d'un modèle de langue. Il "
        "faut retirer les doublons, filtrer les textes de mauvaise qualité et protéger les informations "
        "personnelles. Une chaîne de traitement bien conçue garde une trace de chaque document rejeté et de la "
        "raison du rejet, afin que rien ne soit perdu sans explication et que les résultats restent reproductibles.",
    ),
    (
        "de",
        "Die Standardbibliothek von Python enthält viele nützliche Module für die tägliche Arbeit. Es gibt "
        "Werkzeuge zum Lesen und Schreiben von Dateien, zum Umgang mit Datum und Uhrzeit, zur Kommunikation über "
        "das Netzwerk und zur Kompression von Daten. Jedes Modul ist sorgfältig dokumentiert, und die "
        "Dokumentation erklärt, wie man die Funktionen benutzt und welche Fehler auftreten können.",
    ),
    (
        "de",
        "Bevor ein Sprachmodell trainiert wird, müssen die Daten gründlich bereinigt werden. Doppelte "
        "Dokumente werden entfernt, Texte von schlechter Qualität werden aussortiert und persönliche Daten werden "
        "geschützt. Eine gute Verarbeitungskette schreibt jedes verworfene Dokument mit dem Grund auf, damit "
        "nichts stillschweigend verloren geht und jeder Lauf wiederholt werden kann.",
    ),
    (
        "es",
        "La biblioteca estándar de Python contiene muchos módulos útiles para el trabajo diario. Incluye "
        "herramientas para leer y escribir archivos, para trabajar con fechas, para comunicarse a través de la red "
        "y para comprimir datos. Cada módulo está documentado con cuidado, y la documentación explica cómo usar "
        "las funciones, qué errores pueden aparecer y cuándo conviene elegir otro camino.",
    ),
    (
        "es",
        "Antes de entrenar un modelo de lenguaje hay que limpiar los datos con cuidado. Se eliminan los "
        "documentos duplicados, se descartan los textos de mala calidad y se protegen los datos personales. Una "
        "buena cadena de procesamiento guarda cada documento descartado junto con el motivo, para que nada se "
        "pierda en silencio y cada ejecución se pueda repetir con el mismo resultado.",
    ),
]

PII_SENTENCES = [
    "For questions write to jane.doe@example.org or call +1 415-555-0132 during office hours.",
    "The build server at 192.168.10.24 mails its reports to build-bot@example.com every night.",
    "Payment was made with the card 4111 1111 1111 1111 and confirmed by phone at (020) 7946 0958.",
    "Contact the maintainer at maintainer+python@example.net; the mirror lives at 10.0.0.7.",
]


@functools.lru_cache(maxsize=4)
def stdlib_docstrings(min_words: int = 60) -> list[tuple[str, str]]:
    """(id, text) for every docstring of at least `min_words` words in the standard library, in path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not SKIP_DIRS.intersection(p.relative_to(root).parts))
    out = []
    for f in files:
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        mod = ".".join(f.relative_to(root).with_suffix("").parts)
        nodes = [tree] + [
            n for n in ast.walk(tree) if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        for node in nodes:
            doc = ast.get_docstring(node)
            if doc and len(doc.split()) >= min_words:
                name = getattr(node, "name", "")
                out.append((f"{mod}:{name}:{getattr(node, 'lineno', 0)}" if name else mod, reflow(doc)))
    return out


def reflow(doc: str) -> str:
    """Join wrapped prose lines into one line per paragraph; keep code-like lines (>>>, indented) as they are."""
    out: list[str] = []
    para: list[str] = []
    for line in doc.splitlines():
        if not line.strip() or line.startswith((" ", "\t", ">>>", "...")) or re.match(r"^\s*[-*]\s", line):
            if para:
                out.append(" ".join(para))
                para = []
            if line.strip():
                out.append(line)
            elif out and out[-1] != "":
                out.append("")
        else:
            para.append(line.strip())
    if para:
        out.append(" ".join(para))
    return "\n".join(out).strip()


def edit_words(text: str, target_jaccard: float, rng: random.Random, vocab: list[str], ngram: int = 5) -> str:
    """Replace words at spaced positions so the word n-gram Jaccard with `text` lands near `target_jaccard`.

    Each replaced word (positions >= ngram apart) swaps ngram shingles: J = (n - ngram k) / (n + ngram k).
    """
    words = text.split(" ")
    n = max(1, len(words) - ngram + 1)
    k = round(n * (1 - target_jaccard) / (ngram * (1 + target_jaccard)))
    slots = max(1, len(words) // ngram)
    chosen = sorted(rng.sample(range(slots), min(k, slots)))
    for slot in chosen:
        pos = slot * ngram + rng.randrange(ngram)
        if pos < len(words):
            words[pos] = rng.choice(vocab) + "x"  # suffix: never the original word
    return " ".join(words)


def _records(seed: int = 0) -> list[list[dict | str | bytes]]:
    rng = random.Random(seed)
    base = stdlib_docstrings()
    docs: list[dict] = [
        {"id": f"py/{i:05d}", "text": text, "source": src} for i, (src, text) in enumerate(base)
    ]
    vocab = sorted({w for _, t in base[:200] for w in re.findall(r"[a-z]{3,10}", t)})
    planted: list[dict] = []
    for i, d in enumerate(docs):
        if i % 10 == 3:  # a near-duplicate with about 5% of the words replaced
            planted.append(
                {
                    "id": f"{d['id']}-near",
                    "text": edit_words(d["text"], 0.85, rng, vocab),
                    "source": "planted-near",
                }
            )
        elif i % 25 == 7:  # an exact duplicate up to case and whitespace
            planted.append(
                {"id": f"{d['id']}-exact", "text": "  " + d["text"].upper() + "\n", "source": "planted-exact"}
            )
        if i % 20 == 5:
            d["text"] = d["text"] + "\n\n" + PII_SENTENCES[(i // 20) % len(PII_SENTENCES)]
    for j, (lang, text) in enumerate(FOREIGN):
        planted.append({"id": f"foreign/{lang}-{j}", "text": text, "source": f"planted-{lang}"})
    allrec: list[dict | str | bytes] = docs + planted
    rng.shuffle(allrec)
    shards: list[list[dict | str | bytes]] = [allrec[k::4] for k in range(4)]
    bad: list[dict | str | bytes] = [
        '{"id": "bad/json", "text": "an unterminated record',
        b'{"id": "bad/utf8", "text": "caf\xe9 au lait"}',
        {"id": "bad/empty", "text": "   "},
        {"id": "bad/missing-text", "body": "the text lives under another key"},
        {"id": "bad/not-string", "text": ["a", "list"]},
    ]
    shards[0][5:5] = bad[:3]
    shards[1][7:7] = bad[3:]
    return shards


def build_sample_corpus(out: Path, seed: int = 0, overwrite: bool = False, limit: int | None = None) -> Path:
    """Write the sample corpus to `out`; `limit` keeps the first records of each shard (small test corpora)."""
    shards = [shard[:limit] for shard in _records(seed)]
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for k, suffix in enumerate(["jsonl", "jsonl.gz", "jsonl.zst"]):
            lines = []
            for rec in shards[k]:
                if isinstance(rec, bytes):
                    lines.append(rec)
                elif isinstance(rec, str):
                    lines.append(rec.encode("utf-8"))
                else:
                    lines.append(json.dumps(rec, ensure_ascii=False).encode("utf-8"))
            from anemone_curator.formats import _compress

            (tmp / f"sample-{k:02d}.{suffix}").write_bytes(_compress(b"\n".join(lines) + b"\n", suffix))
        write_records(tmp / "sample-03.parquet", [r for r in shards[3] if isinstance(r, dict)])
    return out


def sample_corpus() -> Path:
    """The embedded sample corpus folder, built on first use (a few seconds)."""
    out = anemone_home() / "curator" / VERSION
    if not out.is_dir():
        try:
            build_sample_corpus(out)
        except Exception:
            if not out.is_dir():  # another process may have built it at the same time
                raise
    return out


# ---- synthetic near-duplicates of known Jaccard (tests, benchmarks) -----------------------------------------


@dataclass
class PlantedPair:
    original: int
    duplicate: int
    jaccard: float  # exact word 5-gram Jaccard of the pair


def near_duplicate_corpus(
    n_docs: int,
    n_words: int = 300,
    dup_fraction: float = 0.1,
    jaccards: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    seed: int = 0,
    ngram: int = 5,
) -> tuple[list[str], list[PlantedPair]]:
    """`n_docs` documents of `n_words` words drawn from the standard library's word frequencies; the last
    `dup_fraction` are edited copies of earlier ones at target Jaccards cycling through `jaccards`."""
    rng = random.Random(seed)
    tokens = [w for _, t in stdlib_docstrings()[:400] for w in re.findall(r"[A-Za-z]+", t)]
    vocab = sorted(set(tokens))
    n_dup = int(n_docs * dup_fraction)
    n_orig = n_docs - n_dup
    docs = [" ".join(rng.choices(tokens, k=n_words)) for _ in range(n_orig)]
    pairs = []
    for j in range(n_dup):
        src = rng.randrange(n_orig)
        target = jaccards[j % len(jaccards)]
        text = edit_words(docs[src], target, rng, vocab, ngram)
        docs.append(text)
        pairs.append(
            PlantedPair(src, n_orig + j, jaccard(shingle_set(docs[src], ngram), shingle_set(text, ngram)))
        )
    return docs, pairs
