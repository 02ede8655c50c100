"""causal_lm_loss against transformers' own loss; sum reduction composes across micro-batches."""

from __future__ import annotations

import copy

import pytest
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


def _partly_trained_batch():
    """Rows whose trained span ends before the row does (an untrained tail, as after an end-of-turn token)."""
    gen = torch.Generator().manual_seed(0)
    examples = []
    for n in (7, 12, 9, 5):
        ids = torch.randint(3, 500, (n,), generator=gen).tolist()
        examples.append({"input_ids": ids, "labels": [-100] * (n // 2) + ids[n // 2 : -2] + [-100] * 2})
    return pad_collate(examples, pad_id=2)


@pytest.mark.parametrize("lora", [False, True])
def test_sparse_loss_gives_the_dense_loss_and_grads(lora):
    from anemone_automodel.lora import apply_lora
    from anemone_automodel.sparse_loss import sparse_causal_lm_loss

    b = _partly_trained_batch()
    inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
    trained = b["labels"][:, 1:] != -100
    # The case it optimises: the trained rows are a minority and the last columns train nothing.
    assert trained.any(0).nonzero().max() + 2 < b["labels"].shape[1]
    assert trained.sum() < trained.any(0).sum() * b["labels"].shape[0]
    torch.manual_seed(0)
    dense_model = apply_lora(tiny_llama(), r=4, alpha=8) if lora else tiny_llama()
    for name, p in dense_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)  # peft starts B at zero, which would hide a wrong adapter path
    sparse_model = copy.deepcopy(dense_model)
    dense = causal_lm_loss(dense_model(**inputs).logits, b["labels"], reduction="sum")
    sparse = sparse_causal_lm_loss(sparse_model, inputs, b["labels"], "cpu")
    torch.testing.assert_close(sparse, dense)
    dense.backward()
    sparse.backward()
    named = [(n, p) for n, p in dense_model.named_parameters() if p.requires_grad]
    assert named
    for (name, p), q in zip(named, [q for q in sparse_model.parameters() if q.requires_grad], strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)
    # The head hook is gone afterwards: a plain forward gives full logits again.
    assert sparse_model(**inputs).logits.shape[:2] == b["input_ids"].shape


def test_sparse_loss_with_nothing_trained_still_backpropagates():
    from anemone_automodel.sparse_loss import sparse_causal_lm_loss

    b = _partly_trained_batch()
    model = tiny_llama()
    loss = sparse_causal_lm_loss(model, {"input_ids": b["input_ids"]}, torch.full_like(b["labels"], -100), "cpu")
    assert float(loss.detach()) == 0.0
    loss.backward()  # an FSDP rank with an all-prompt micro-batch must still run backward


def test_sparse_tied_embedding_grad_gives_the_same_dense_gradient():
    from anemone_automodel.model import sparse_tied_embedding_grad
    from anemone_automodel.optim import build_optimizer
    from anemone_automodel.sparse_loss import sparse_causal_lm_loss

    assert not sparse_tied_embedding_grad(tiny_llama())  # untied: its own gradient must stay dense
    dense_model = tiny_llama(tie_word_embeddings=True)
    assert dense_model.get_input_embeddings().weight is dense_model.get_output_embeddings().weight
    model = copy.deepcopy(dense_model)
    assert sparse_tied_embedding_grad(model)
    b = _partly_trained_batch()
    inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
    for m in (dense_model, model):
        sparse_causal_lm_loss(m, inputs, b["labels"], "cpu").backward()
    grad = model.get_input_embeddings().weight.grad
    assert grad.layout == torch.strided  # the fused optimizer takes it as it is
    torch.testing.assert_close(grad, dense_model.get_input_embeddings().weight.grad, rtol=1e-6, atol=1e-8)
    build_optimizer(model).step()
