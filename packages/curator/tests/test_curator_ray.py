"""The Ray executor runs the same pipeline unchanged and writes the same bytes as the local one."""

from __future__ import annotations

from pathlib import Path

import pytest

from anemone_core.config import validate
from anemone_curator.corpus import build_sample_corpus
from anemone_curator.executor import ShardFailed
from anemone_curator.pipeline import run_pipeline
from anemone_curator.pipeline_config import PipelineConfig

ray = pytest.importorskip("ray")

STAGES = [
    {"stage": "langid"},
    {"stage": "gopher_quality"},
    {"stage": "pii"},
    {"stage": "exact_dedup"},
    {"stage": "fuzzy_dedup"},
    {"stage": "tokenize"},
]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # Ray waits a fixed 30 s for its raylet to register; on an overloaded shared machine that can run out.
    import os

    try:
        if os.environ.get("RAY_ADDRESS"):  # a cluster started beforehand (`ray start --head`)
            ray.init(log_to_driver=False)
        else:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # ray raises a bare Exception on a startup timeout
        ray.shutdown()
        pytest.skip(f"a local Ray instance did not start on this machine: {exc}")
    yield
    ray.shutdown()


def _tree(out: Path) -> dict[str, bytes]:
    skip = {"stats.json", "pipeline.yaml"}
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def test_ray_and_local_write_identical_outputs(tmp_path):
    corpus = build_sample_corpus(tmp_path / "corpus", limit=40)
    outs = {}
    for kind, workers in (("local", 1), ("ray", 2)):
        cfg = validate(
            PipelineConfig,
            {
                "input": [str(corpus)],
                "output": str(tmp_path / kind),
                "stages": STAGES,
                "executor": {"kind": kind, "workers": workers},
            },
        )
        result = run_pipeline(cfg, progress=False)
        assert result.totals["unaccounted"] == 0
        outs[kind] = _tree(tmp_path / kind)
    assert outs["ray"] == outs["local"]
    assert any(k.startswith("kept/") for k in outs["ray"])


def test_a_failing_ray_task_fails_the_run(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    (data / "good.jsonl").write_text('{"text": "hello there"}\n')
    (data / "broken.jsonl.gz").write_bytes(b"this is not gzip data")
    cfg = validate(
        PipelineConfig,
        {
            "input": [str(data)],
            "output": str(tmp_path / "o"),
            "stages": [{"stage": "pii"}],
            "executor": {"kind": "ray"},
        },
    )
    with pytest.raises(ShardFailed, match="shard broken .*Not a gzipped file"):
        run_pipeline(cfg, progress=False)


def _die(spec):
    import os

    os._exit(7)


def test_a_dead_ray_worker_fails_the_run():
    import sys

    from anemone_curator.executor import map_shards

    ray.cloudpickle.register_pickle_by_value(
        sys.modules[__name__]
    )  # the test module is not importable by workers
    with pytest.raises(ShardFailed, match="died"):
        list(map_shards(_die, [{"stem": "s0", "segment": 0}], "ray", 1, None))
