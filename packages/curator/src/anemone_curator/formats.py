"""Readers and writers: JSONL (plain, .gz, .zst) and Parquet; every bad record becomes a reject, never an exception.

Document ids are stable: the record's own `id` field when present, else `<file stem>/<line number>` (1-based),
so the id that the duplicates report names is the id a user can find in the input.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from anemone_core.errors import AnemoneError
from anemone_curator.stage import Doc, Rejected

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".json.zst")
SUFFIXES = (*JSONL_SUFFIXES, ".parquet")
READER = "read"  # the stage name of reader rejects


def file_stem(path: str | Path) -> str:
    name = Path(path).name
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def check_suffix(path: str | Path, what: str) -> None:
    if not str(path).endswith(SUFFIXES):
        raise AnemoneError(
            f"{what} '{path}' has an unknown format: name files ending in one of {', '.join(SUFFIXES)}"
        )


def _open_binary(path: Path) -> IO[bytes]:
    name = path.name
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


def _doc_from_record(
    rec: Any, default_id: str, text_field: str, id_field: str
) -> tuple[Doc | None, str | None]:
    if not isinstance(rec, dict):
        return None, "not_an_object"
    if text_field not in rec:
        return None, "missing_text_field"
    text = rec[text_field]
    if not isinstance(text, str):
        return None, "text_not_a_string"
    if not text.strip():
        return None, "empty_text"
    doc_id = rec.get(id_field)
    doc = {k: v for k, v in rec.items() if k not in (id_field, text_field)}
    return {"id": str(doc_id) if doc_id is not None else default_id, "text": text, **doc}, None


def count_lines(path: str | Path) -> int:
    """Lines of a JSONL file as `read_documents` numbers them (a last line without newline counts)."""
    n, last = 0, b"\n"
    with _open_binary(Path(path)) as raw:
        while chunk := raw.read(1 << 24):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def read_documents(
    path: str | Path,
    text_field: str = "text",
    id_field: str = "id",
    start: int = 0,
    stop: int | None = None,
) -> Iterator[Doc | Rejected]:
    """Yield each record of `path` as a document, or as a `Rejected` naming what is wrong with it.

    `start`/`stop` select JSONL lines start+1 .. stop (1-based numbering is kept for the default ids).
    """
    path = Path(path)
    stem = file_stem(path)
    if path.name.endswith(".parquet"):
        yield from _read_parquet(path, stem, text_field, id_field)
        return
    with _open_binary(path) as raw:
        for lineno, line in enumerate(io.BufferedReader(raw), start=1):  # type: ignore[arg-type]
            if lineno <= start:
                continue
            if stop is not None and lineno > stop:
                break
            default_id = f"{stem}/{lineno}"
            source = {"id": default_id, "source": f"{path.name}:{lineno}"}
            line = line.rstrip(b"\r\n")
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raw_text = line.decode("utf-8", errors="replace")
                yield Rejected({**source, "raw": raw_text}, READER, f"invalid_utf8 (byte {exc.start})")
                continue
            if not text.strip():
                yield Rejected({**source, "raw": text}, READER, "blank_line")
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError:
                yield Rejected({**source, "raw": text}, READER, "malformed_json")
                continue
            doc, why = _doc_from_record(rec, default_id, text_field, id_field)
            if doc is None:
                bad = rec if isinstance(rec, dict) else {"raw": text}
                yield Rejected({**source, **bad}, READER, why or "invalid")
            else:
                yield doc


def _read_parquet(path: Path, stem: str, text_field: str, id_field: str) -> Iterator[Doc | Rejected]:
    import pyarrow.parquet as pq

    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for rec in batch.to_pylist():
            row += 1
            default_id = f"{stem}/{row}"
            doc, why = _doc_from_record(rec, default_id, text_field, id_field)
            if doc is None:
                yield Rejected(
                    {"id": default_id, "source": f"{path.name}:{row}", **rec}, READER, why or "invalid"
                )
            else:
                yield doc


def _encode_jsonl(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in records)


def _compress(data: bytes, name: str) -> bytes:
    if name.endswith(".gz"):
        # mtime=0 and no file name: the same records give the same bytes (resume is byte-identical).
        return gzip.compress(data, compresslevel=6, mtime=0)
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


class RecordWriter:
    """Stream records to `path` (JSONL, gzip/zstd by suffix) through a temporary file renamed on `close`.

    Parquet needs one schema for the file, so its records are buffered and written on close. Compression is
    deterministic (gzip mtime 0), so the same records in the same batches give the same bytes.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self._buffer: list[dict[str, Any]] | None = [] if self.path.name.endswith(".parquet") else None
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent)
        self._tmp = Path(tmp)
        self._raw = os.fdopen(fd, "wb")
        self._fh: Any = self._raw
        if self.path.name.endswith(".gz"):
            self._fh = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=6)
        elif self.path.name.endswith(".zst"):
            import zstandard

            self._fh = zstandard.ZstdCompressor(level=3).stream_writer(self._raw, closefd=False)

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        if self._buffer is not None:
            before = len(self._buffer)
            self._buffer.extend(records)
            self.count += len(self._buffer) - before
            return
        data = _encode_jsonl(records)
        self.count += data.count(b"\n")
        self._fh.write(data)

    def close(self) -> Path:
        if self._buffer is not None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            # pyarrow takes the columns from the first row: give every row every key so no field is lost.
            keys = dict.fromkeys(k for rec in self._buffer for k in rec)
            rows = [{k: rec.get(k) for k in keys} for rec in self._buffer]
            table = pa.Table.from_pylist(rows) if rows else pa.table({"id": pa.array([], pa.string())})
            pq.write_table(table, self._raw)
        elif self._fh is not self._raw:
            self._fh.close()
        self._raw.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._raw.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_records(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write `records` atomically as JSONL (compressed by suffix) or Parquet."""
    with RecordWriter(path) as writer:
        writer.write(records)
    return Path(path)


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Stream back a JSONL file this module wrote."""
    with _open_binary(Path(path)) as raw:
        for line in io.BufferedReader(raw):  # type: ignore[arg-type]
            if line.strip():
                yield json.loads(line)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Read back a file this module wrote (tests, stats, the duplicates report)."""
    path = Path(path)
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with _open_binary(path) as fh:
        return [json.loads(line) for line in fh.read().decode("utf-8").splitlines() if line]


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (every known suffix inside, sorted) and globs -> a sorted, de-duplicated file list."""
    import glob

    found: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found += sorted(q for q in p.rglob("*") if q.is_file() and q.name.endswith(SUFFIXES))
        elif p.is_file():
            check_suffix(p, "input file")
            found.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
            if not matches:
                raise AnemoneError(
                    f"input '{item}' matches no file (working directory {Path.cwd()}): "
                    "give a file, a folder or a glob of JSONL/Parquet files"
                )
            found += [m for m in matches if m.is_file() and m.name.endswith(SUFFIXES)]
    unique = sorted(set(found))
    if not unique:
        raise AnemoneError(f"input {inputs} holds no {'/'.join(SUFFIXES)} files: point it at your data")
    stems = [file_stem(p) for p in unique]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise AnemoneError(
            f"input files share the stem(s) {dupes}, so their default document ids would collide: rename them"
        )
    return unique
