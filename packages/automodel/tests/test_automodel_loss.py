"""causal_lm_loss against transformers' own loss; sum reduction composes across micro-batches."""

from __future__ import annotations

import torch

from anemone_automodel.data.collate import pad_collate
from anemone_automodel.loss import causal_lm_loss, count_trained_tokens
from anemone_core.testing import tiny_llama


def _batch():
    gen = torch.Generator().manual_seed(0)
    examples = []
    for n in (7, 12, 9, 5):
        ids = torch.randint(3, 500, (n,), generator=gen).tolist()
        labels = [-100] * (n // 2) + ids[n // 2 :]
        examples.append({"input_ids": ids, "labels": labels})
    return pad_collate(examples, pad_id=2)


def test_mean_matches_transformers():
    model = tiny_llama()
    b = _batch()
    out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
    ours = causal_lm_loss(out.logits, b["labels"])
    torch.testing.assert_close(ours, out.loss, rtol=1e-6, atol=1e-6)


def test_sum_over_microbatches_equals_full_mean():
    model = tiny_llama()
    b = _batch()
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    full = causal_lm_loss(logits, b["labels"])
    parts = sum(causal_lm_loss(logits[i : i + 1], b["labels"][i : i + 1], reduction="sum") for i in range(4))
    torch.testing.assert_close(parts / count_trained_tokens(b["labels"]), full)


def test_pad_collate_shapes_and_values():
    b = _batch()
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape == (4, 12)
    assert b["attention_mask"].sum(1).tolist() == [7, 12, 9, 5]
    assert (b["labels"][b["attention_mask"] == 0] == -100).all()
    assert (b["input_ids"][b["attention_mask"] == 0] == 2).all()


def test_logits_only_at_trained_positions_give_the_same_loss_and_grads():
    from anemone_automodel.loss import causal_lm_loss_at, trained_positions

    b = _batch()
    dense_model, sparse_model = tiny_llama(), tiny_llama()
    dense = causal_lm_loss(dense_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                           b["labels"], reduction="sum")
    pos = trained_positions(b["labels"])
    assert 0 < len(pos) < b["labels"].shape[1] - 1
    logits = sparse_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], logits_to_keep=pos).logits
    sparse = causal_lm_loss_at(logits, b["labels"], pos, reduction="sum")
    torch.testing.assert_close(sparse, dense)
    dense.backward()
    sparse.backward()
    for (name, p), q in zip(dense_model.named_parameters(), sparse_model.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)
