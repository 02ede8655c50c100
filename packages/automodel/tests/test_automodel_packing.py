"""Sequence packing: documents in one row never attend to each other; loss targets stay inside documents."""

from __future__ import annotations

import torch

from anemone_automodel.data.collate import pack_collate, pack_groups
from anemone_automodel.loss import causal_lm_loss
from anemone_core.testing import tiny_model


def _docs(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(3, 500, (n,), generator=gen).tolist()
        out.append({"input_ids": ids, "labels": list(ids)})
    return out


def test_pack_groups_is_greedy_and_bounded():
    assert pack_groups([5, 5, 5, 20, 3], seq_len=12) == [[0, 1], [2], [3], [4]]
    assert pack_groups([4, 4, 4], seq_len=12) == [[0, 1, 2]]


def test_no_cross_document_attention():
    for arch in ("llama", "qwen3"):
        model = tiny_model(arch)
        docs = _docs([6, 9, 4])
        batch = pack_collate([docs], seq_len=24, pad_id=2)
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]  # (S, V)
        at = 0
        for d in docs:
            alone = model(input_ids=torch.tensor([d["input_ids"]])).logits[0]  # (n, V)
            torch.testing.assert_close(packed[at : at + len(d["input_ids"])], alone, rtol=1e-5, atol=1e-5)
            at += len(d["input_ids"])


def test_packed_loss_equals_sum_of_document_losses():
    model = tiny_model("llama")
    docs = _docs([6, 9, 4], seed=1)
    batch = pack_collate([docs], seq_len=24, pad_id=2)
    # The first token of every document is not a target: it would be predicted from the previous document.
    starts = [0, 6, 15]
    assert all(batch["labels"][0, s] == -100 for s in starts)
    packed = causal_lm_loss(model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits,
                            batch["labels"], reduction="sum")
    alone = sum(causal_lm_loss(model(input_ids=torch.tensor([d["input_ids"]])).logits,
                               torch.tensor([d["labels"]]), reduction="sum") for d in docs)
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)
