"""End to end: every document accounted for, rejects with reasons, Megatron tokens, executors, resume."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from anemone_core.config import load_config, validate
from anemone_core.errors import AnemoneError, ConfigError
from anemone_curator.corpus import build_sample_corpus
from anemone_curator.formats import read_records
from anemone_curator.pipeline import run_pipeline
from anemone_curator.pipeline_config import PipelineConfig


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return build_sample_corpus(tmp_path_factory.mktemp("corpus") / "sample", limit=60)


def _cfg(corpus: Path, out: Path, **kw) -> PipelineConfig:
    data = {"input": [str(corpus)], "output": str(out), "executor": {"workers": 1}, **kw}
    return validate(PipelineConfig, data)


def _tree(out: Path) -> dict[str, bytes]:
    skip = {"stats.json", "pipeline.yaml"}  # hold absolute paths
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in skip
    }


@pytest.fixture(scope="module")
def full_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    result = run_pipeline(_cfg(corpus, out), progress=False)
    return out, result


def test_every_document_is_accounted_for(full_run, corpus):
    out, result = full_run
    t = result.totals
    assert t["input"] == 4 * 60  # 60 records per shard, the malformed ones among them
    assert t["unaccounted"] == 0
    assert t["input"] == t["kept"] + t["rejected"] + t["duplicates"]
    kept = [d for p in sorted((out / "kept").iterdir()) for d in read_records(p)]
    rejects = [r for p in sorted((out / "rejects").iterdir()) for r in read_records(p)]
    dups = read_records(next((out / "duplicates").glob("*exact*")))
    dups += read_records(next((out / "duplicates").glob("*fuzzy*")))
    assert len(kept) == t["kept"] and len(rejects) == t["rejected"] and len(dups) == t["duplicates"]
    ids = [d["id"] for d in kept] + [r["id"] for r in rejects] + [d["id"] for d in dups]
    assert len(ids) == len(set(ids)) == t["input"]  # ids are unique and stable end to end
    reasons = {r["id"]: r["reason"] for r in rejects}
    assert reasons["sample-00/6"] == "malformed_json"  # no parsable id: file stem / line number
    assert reasons["sample-00/7"].startswith("invalid_utf8")
    assert reasons["bad/empty"] == "empty_text"
    assert reasons["bad/missing-text"] == "missing_text_field"
    assert reasons["bad/not-string"] == "text_not_a_string"
    kept_ids = {d["id"] for d in kept}
    assert all(d["kept_id"] in kept_ids or d["kept_id"] in {x["id"] for x in dups} for d in dups)
    assert any(r["reason"].startswith("langid_not_en") for r in rejects)
    stages = [s["name"] for s in result.stages]
    assert stages[0] == "read" and stages[-1] == "08_tokenize"


def test_pii_is_redacted_and_counted(full_run):
    out, result = full_run
    pii = next(s for s in result.stages if s["name"].endswith("_pii"))
    kept = [d for p in sorted((out / "kept").iterdir()) for d in read_records(p)]
    text = " ".join(d["text"] for d in kept)
    assert "@example." not in text and "4111 1111 1111 1111" not in text
    assert (
        sum(v for k, v in pii["counters"].items() if k != "docs_with_pii")
        == sum(sum(d.get("pii", {}).values()) for d in kept)
        or pii["counters"]
    )


def test_tokens_are_a_megatron_indexed_dataset(full_run):
    out, result = full_run
    indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    ds = indexed.IndexedDataset(str(out / "tokens"), mmap=True)
    kept = [d for p in sorted((out / "kept").iterdir()) for d in read_records(p)]
    ids = [d for p in sorted((out / "tokens").glob("*.jsonl.gz")) for d in read_records(p)]
    assert len(ds) == len(kept) == len(ids) == result.totals["kept"]
    for i in (0, len(ds) // 2, len(ds) - 1):
        np.testing.assert_array_equal(ds[i], np.array(ids[i]["tokens"]))
    assert ds.index.dtype == np.uint16  # 49152-token vocabulary fits
    assert ds[0][-1] == 2  # <|im_end|>, SmolLM2's EOS, appended


def test_tokens_match_transformers(full_run):
    out, _ = full_run
    from transformers import AutoTokenizer

    from anemone_core.models import resolve_model

    tok = AutoTokenizer.from_pretrained(str(resolve_model(None)))
    kept = [d for p in sorted((out / "kept").iterdir()) for d in read_records(p)][:5]
    ids = [d for p in sorted((out / "tokens").glob("*.jsonl.gz")) for d in read_records(p)][:5]
    for doc, toks in zip(kept, ids, strict=True):
        assert toks["tokens"] == tok(doc["text"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_process_pool_matches_inline(full_run, corpus, tmp_path):
    out, _ = full_run
    other = tmp_path / "pool"
    run_pipeline(_cfg(corpus, other, executor={"workers": 2}), progress=False)
    assert _tree(other) == _tree(out)


def test_rerun_of_finished_output_is_a_no_op_and_other_config_is_refused(full_run, corpus):
    out, result = full_run
    again = run_pipeline(_cfg(corpus, out), progress=False)
    assert again.totals == result.totals
    with pytest.raises(AnemoneError, match="--overwrite"):
        run_pipeline(_cfg(corpus, out, batch_size=7), progress=False)


def test_killed_run_resumes_byte_identical(full_run, corpus, tmp_path):
    out, _ = full_run
    resumed = tmp_path / "resumed"
    script = textwrap.dedent(f"""
        import os
        from anemone_core.config import validate
        from anemone_curator.pipeline import run_pipeline
        from anemone_curator.pipeline_config import PipelineConfig
        done = []
        def die(stats):
            done.append(stats)
            if len(done) == 6:  # segment 0 finished, then 2 shards of segment 1: kill -9 style, no cleanup
                os._exit(9)
        cfg = validate(PipelineConfig, {{"input": [{str(corpus)!r}], "output": {str(resumed)!r},
                                        "executor": {{"workers": 1}}}})
        run_pipeline(cfg, progress=False, on_shard_done=die)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr
    assert not (resumed / "stats.json").exists()
    assert len(list((resumed / ".work" / "stats").iterdir())) == 6
    result = run_pipeline(_cfg(corpus, resumed), progress=False)
    assert result.resumed_shards == 6
    assert _tree(resumed) == _tree(out)


def test_shard_error_fails_the_run(tmp_path, monkeypatch):
    from anemone_curator.executor import ShardFailed, map_shards

    (tmp_path / "curator_raiser.py").write_text(
        "def fail(spec):\n    raise ValueError(f'bad {spec[\"stem\"]}')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import curator_raiser

    specs = [{"stem": f"s{i}", "segment": 0} for i in range(2)]
    for workers in (1, 2):
        with pytest.raises(ShardFailed, match=r"shard s\d \(segment 0\) failed: ValueError\('bad s\d'\)"):
            list(map_shards(curator_raiser.fail, specs, "local", workers, None))


def test_dead_worker_fails_the_run_without_hanging(tmp_path, monkeypatch):
    from anemone_curator.executor import ShardFailed, map_shards

    (tmp_path / "curator_killer.py").write_text("import os\n\ndef die(spec):\n    os._exit(7)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import curator_killer

    specs = [{"stem": f"s{i}", "segment": 0} for i in range(3)]
    with pytest.raises(ShardFailed, match="worker process died"):
        list(map_shards(curator_killer.die, specs, "local", 2, None))


def test_bad_configs_name_the_field():
    with pytest.raises(ConfigError, match="stages.0"):
        validate(PipelineConfig, {"stages": [{"stage": "gopher"}]})
    with pytest.raises(ConfigError, match="tokenize must be the last"):
        validate(PipelineConfig, {"stages": [{"stage": "tokenize"}, {"stage": "pii"}]})
    with pytest.raises(ConfigError, match="bands"):
        validate(PipelineConfig, {"stages": [{"stage": "fuzzy_dedup", "bands": 0}]})
    with pytest.raises(ConfigError, match="tokenizer = '/nope' is not a Hugging Face tokenizer folder"):
        validate(PipelineConfig, {"stages": [{"stage": "tokenize", "tokenizer": "/nope"}]})
    with pytest.raises(AnemoneError, match="matches no file"):
        run_pipeline(validate(PipelineConfig, {"input": ["/nonexistent/*.jsonl"]}), progress=False)


def test_shipped_recipes_load():
    recipes = Path(__file__).parents[1] / "recipes"
    found = sorted(recipes.glob("*.yaml"))
    assert found
    for path in found:
        load_config(PipelineConfig, path)


def test_splitting_a_file_into_line_shards_changes_nothing(corpus, tmp_path):
    stages = [{"stage": "pii"}, {"stage": "exact_dedup"}, {"stage": "fuzzy_dedup"}]
    single = corpus / "sample-00.jsonl"
    whole = run_pipeline(_cfg(single, tmp_path / "whole", stages=stages), progress=False)
    split = run_pipeline(
        _cfg(single, tmp_path / "split", stages=stages, shard_lines=13),
        progress=False,
    )
    assert split.totals == whole.totals and whole.totals["input"] == 60
    kept = sorted((tmp_path / "split" / "kept").iterdir())
    assert [p.name for p in kept][:2] == ["sample-00-p00000.jsonl.gz", "sample-00-p00001.jsonl.gz"]
    assert len(kept) == 5
    docs_split = [d for p in kept for d in read_records(p)]
    docs_whole = read_records(tmp_path / "whole" / "kept" / "sample-00.jsonl.gz")
    assert docs_split == docs_whole
    for name in ("02_fuzzy_dedup", "01_exact_dedup"):
        a = read_records(tmp_path / "split" / "duplicates" / f"{name}.jsonl.gz")
        assert a == read_records(tmp_path / "whole" / "duplicates" / f"{name}.jsonl.gz")
