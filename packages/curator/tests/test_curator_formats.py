"""Readers and writers: every format round-trips, Parquet keeps fields missing from the first row."""

from __future__ import annotations

import pytest

from anemone_curator.formats import read_documents, read_records, write_records
from anemone_curator.stage import Rejected


@pytest.mark.parametrize("suffix", ["jsonl", "jsonl.gz", "jsonl.zst", "parquet"])
def test_round_trip(tmp_path, suffix):
    recs = [{"id": "a", "text": "first"}, {"id": "b", "text": "second", "pii": {"email": 1}}]
    path = write_records(tmp_path / f"x.{suffix}", recs)
    back = read_records(path)
    assert back[1]["pii"]["email"] == 1 and back[0]["text"] == "first"
    docs = list(read_documents(path))
    assert [d["id"] for d in docs] == ["a", "b"]


def test_same_records_same_bytes(tmp_path):
    recs = [{"id": str(i), "text": "t" * i} for i in range(50)]
    for suffix in ("jsonl.gz", "jsonl.zst"):
        a = write_records(tmp_path / f"a.{suffix}", recs).read_bytes()
        b = write_records(tmp_path / f"b.{suffix}", recs).read_bytes()
        assert a == b


def test_bad_lines_become_rejects_with_default_ids(tmp_path):
    path = tmp_path / "shard.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{broken\n\n{"text": "caf\xe9"}\n{"id": 7, "text": "seven"}\n')
    items = list(read_documents(path))
    assert [i["id"] if isinstance(i, dict) else (i.doc["id"], i.reason.split(" ")[0]) for i in items] == [
        "shard/1",
        ("shard/2", "malformed_json"),
        ("shard/3", "blank_line"),
        ("shard/4", "invalid_utf8"),
        "7",
    ]
    assert all(isinstance(i, Rejected) for i in items[1:4])
