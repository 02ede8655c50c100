import json

import pytest

from anemone_core.errors import AnemoneError
from anemone_speech.manifest import (
    BucketBatchSampler,
    Utterance,
    filter_by_duration,
    read_manifest,
    write_manifest,
)


def test_round_trip_relative_paths(tmp_path):
    (tmp_path / "wavs").mkdir()
    utts = [Utterance(str(tmp_path / "wavs" / f"{i}.wav"), 1.0 + i, f"text {i}", (("voice", "v"),)) for i in range(3)]
    path = write_manifest(tmp_path / "m.jsonl", utts)
    first = json.loads(path.read_text().splitlines()[0])
    assert first["audio_filepath"] == "wavs/0.wav" and first["voice"] == "v"
    assert read_manifest(path) == utts


def test_missing_field_names_the_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"audio_filepath": "a.wav", "duration": 1.0, "text": "hi"}\n\n{"audio_filepath": "b.wav"}\n')
    with pytest.raises(AnemoneError, match=r"line 3: missing field\(s\) duration, text"):
        read_manifest(path)
    assert len(read_manifest(path, needed=("audio_filepath",))) == 2


@pytest.mark.parametrize(("line", "words"), [
    ("not json", "not valid JSON"), ("[1, 2]", "expected a JSON object"),
    ('{"audio_filepath": "a.wav", "duration": -1, "text": "x"}', "duration = -1"),
    ('{"audio_filepath": "a.wav", "duration": 1, "text": 5}', "text = 5"),
])
def test_bad_lines(tmp_path, line, words):
    path = tmp_path / "m.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(AnemoneError, match=words):
        read_manifest(path)


def test_missing_and_empty_manifest(tmp_path):
    with pytest.raises(AnemoneError, match="not found"):
        read_manifest(tmp_path / "nope.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(AnemoneError, match="no entries"):
        read_manifest(tmp_path / "e.jsonl")


def test_duration_filter():
    utts = [Utterance("a", d, "x") for d in (0.05, 1.0, 30.0)]
    assert [u.duration for u in filter_by_duration(utts, 0.1, 20.0)] == [1.0]


def test_bucket_sampler_covers_everything_and_groups_lengths():
    durations = [float(i % 50) for i in range(200)]
    sampler = BucketBatchSampler(durations, batch_size=8, num_buckets=4, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(200))
    spread = max(max(durations[i] for i in b) - min(durations[i] for i in b) for b in batches)
    assert spread <= 50 / 4 + 8  # a batch holds similar lengths
    assert sum(len(b) < 8 for b in batches) <= 4
    assert list(sampler) != batches  # a new order each epoch
    assert len(sampler) == len(batches)


def test_bucket_sampler_shards_evenly():
    durations = [1.0] * 45
    shards = [list(BucketBatchSampler(durations, 4, num_replicas=2, rank=r, seed=3)) for r in range(2)]
    assert len(shards[0]) == len(shards[1])
    assert not {i for b in shards[0] for i in b} & {i for b in shards[1] for i in b}
