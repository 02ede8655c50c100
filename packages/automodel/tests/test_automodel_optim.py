"""Schedule shape, optimizer groups, LoRA application."""

from __future__ import annotations

import pytest

from anemone_automodel.lora import apply_lora
from anemone_automodel.optim import build_optimizer, build_scheduler, warmup_cosine
from anemone_core.errors import AnemoneError
from anemone_core.testing import tiny_llama


def test_warmup_then_cosine():
    lrs = [warmup_cosine(s, warmup_steps=4, total_steps=20, min_lr_ratio=0.1) for s in range(21)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == pytest.approx(1.0) and lrs[20] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))


def test_scheduler_drives_lr():
    model = tiny_llama()
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1)
    assert {g["weight_decay"] for g in opt.param_groups} == {0.1, 0.0}
    sched = build_scheduler(opt, warmup_steps=2, total_steps=10)
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_apply_lora_trains_only_adapters():
    peft_model = apply_lora(tiny_llama(), r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    opt = build_optimizer(peft_model)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(trainable)


def test_apply_lora_unknown_target_names_the_choices():
    with pytest.raises(AnemoneError, match="choose from .*q_proj"):
        apply_lora(tiny_llama(), target_modules=["qkv"])
