"""The one-process export streams the checkpoint group by group into pre-planned safetensors files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from anemone_bridge.convert import import_ckpt
from anemone_bridge.hf_writer import PlannedShardWriter, PlannedTensor
from anemone_bridge.jobs import export_job
from anemone_bridge.weights import HFReader


@pytest.mark.parametrize("arch", ["qwen2", "mixtral", "llama_tied"])
def test_streamed_export_in_small_groups_is_bit_exact(tiny_folders, tmp_path, arch):
    src = tiny_folders[arch]
    import_ckpt(src, tmp_path / "mg", quiet=True)
    # groups of ~40 kB and 60 kB files: many loads, many shards, an index
    export_job(str(tmp_path / "mg"), str(tmp_path / "hf"), max_shard_bytes=60_000, chunk_bytes=40_000)
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    a, b = HFReader(src), HFReader(tmp_path / "hf")
    assert sorted(a.where) == sorted(b.where)
    for name in a.where:
        assert torch.equal(a.get(name), b.get(name)), name
    assert json.loads((tmp_path / "hf" / "config.json").read_text()) == json.loads((src / "config.json").read_text())


def test_planned_writer_writes_safetensors_without_holding_tensors(tmp_path):
    tensors = {"a": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int64),
               "c": torch.randn(4, 2).to(torch.bfloat16), "d": torch.tensor([True, False])}
    plan = [PlannedTensor(k, tuple(v.shape), v.dtype) for k, v in tensors.items()]
    writer = PlannedShardWriter(tmp_path, plan, max_shard_bytes=64)
    for k, v in tensors.items():
        writer.add(k, v)
    files = writer.close()
    assert files[-1] == "model.safetensors.index.json" and len(files) == 4  # a | b | c+d, then the index
    loaded = {}
    for f in files[:-1]:
        loaded.update(load_file(str(tmp_path / f)))
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


def test_planned_writer_refuses_a_stream_that_differs_from_the_plan(tmp_path):
    writer = PlannedShardWriter(tmp_path, [PlannedTensor("a", (2,), torch.float32)])
    with pytest.raises(AssertionError, match="plan says"):
        writer.add("a", torch.zeros(3))
    writer = PlannedShardWriter(tmp_path, [PlannedTensor("a", (2,), torch.float32)] * 1)
    with pytest.raises(AssertionError, match="ended before"):
        writer.close()
