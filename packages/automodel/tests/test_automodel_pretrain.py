"""Pretraining inputs: raw-text JSONL and Megatron .bin/.idx datasets, read back exactly; a short run learns."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from anemone_automodel.data.megatron import HEADER, read_megatron_documents
from anemone_core.errors import AnemoneError


def write_megatron(prefix, docs: list[list[list[int]]], dtype=np.uint16) -> None:
    """A .bin/.idx pair in megatron-core's MMIDIDX layout; each document is a list of sequences."""
    seqs = [s for d in docs for s in d]
    lengths = [len(s) for s in seqs]
    pointers = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) * np.dtype(dtype).itemsize
    doc_idx = np.cumsum([0] + [len(d) for d in docs]).astype(np.int64)
    with open(f"{prefix}.bin", "wb") as fh:
        for s in seqs:
            fh.write(np.asarray(s, dtype=dtype).tobytes())
    with open(f"{prefix}.idx", "wb") as fh:
        fh.write(HEADER + struct.pack("<Q", 1) + struct.pack("<B", 8))
        fh.write(struct.pack("<Q", len(seqs)) + struct.pack("<Q", len(doc_idx)))
        fh.write(np.asarray(lengths, dtype=np.int32).tobytes() + pointers.tobytes() + doc_idx.tobytes())


def test_megatron_documents_round_trip(tmp_path):
    docs = [[[5, 6, 7], [8, 9]], [[10, 11, 12, 13, 14, 15, 16]]]
    write_megatron(tmp_path / "ds", docs)
    out = read_megatron_documents(str(tmp_path / "ds"), seq_len=4)
    assert [e["input_ids"] for e in out] == [[5, 6, 7, 8], [10, 11, 12, 13], [14, 15, 16]]  # [9] is too short
    assert all(e["labels"] == e["input_ids"] for e in out)


@pytest.mark.slow  # importing megatron-core takes ~10-100 s here
def test_megatron_core_written_dataset_reads_back(tmp_path):
    indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    import torch

    builder = indexed.IndexedDatasetBuilder(str(tmp_path / "mc.bin"), dtype=np.int32)
    docs = [[3, 4, 5, 6], [7, 8, 9]]
    for d in docs:
        builder.add_document(torch.tensor(d), [len(d)])
    builder.finalize(str(tmp_path / "mc.idx"))
    out = read_megatron_documents(str(tmp_path / "mc"), seq_len=16)
    assert [e["input_ids"] for e in out] == docs


def test_megatron_missing_files_name_the_fix(tmp_path):
    with pytest.raises(AnemoneError, match="must both exist"):
        read_megatron_documents(str(tmp_path / "nothing"), seq_len=8)


def test_pretrain_from_scratch_on_text_jsonl(tiny_dir, tmp_path):
    from anemone_automodel.config import PretrainConfig
    from anemone_automodel.trainer import train
    from anemone_core.config import load_config

    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"text": f"{i} + {i} = {2 * i}. " * 8}) + "\n" for i in range(40)))
    cfg = load_config(PretrainConfig, None, [
        f"model.path={tiny_dir}", f"data.path={data}", f"output.dir={tmp_path / 'run'}", "data.seq_len=64",
        "train.steps=6", "train.micro_batch_size=4", "optim.warmup_steps=1", "optim.lr=3e-3",
        "model.config_overrides={num_hidden_layers: 1}"])
    s = train(cfg)
    assert s["final_loss"] < s["first_loss"]
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(s["outputs"]["hf"]).config.num_hidden_layers == 1


def test_shipped_recipes_load():
    from pathlib import Path

    from anemone_automodel.config import FinetuneConfig, PretrainConfig
    from anemone_core.config import load_config

    recipes = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
    assert recipes
    for r in recipes:
        cls = PretrainConfig if r.name.startswith("pretrain") else FinetuneConfig
        load_config(cls, r)
