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


def test_fused_lora_forward_matches_peft():
    import copy

    import torch

    from anemone_automodel.lora import fuse_lora_forward

    torch.manual_seed(0)
    peft_model = apply_lora(tiny_llama(), r=4, alpha=12)  # scaling 3: not a power of two, so not bit-exact
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    fused = copy.deepcopy(peft_model)
    assert fuse_lora_forward(fused) == 14 and fuse_lora_forward(fused) == 0  # 2 layers x 7 targets, once
    ids = torch.randint(3, 500, (2, 9), generator=torch.Generator().manual_seed(1))
    ref, got = peft_model(ids).logits, fused(ids).logits
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    ref.square().mean().backward()
    got.square().mean().backward()
    grads = [(n, p.grad) for n, p in peft_model.named_parameters() if p.requires_grad]
    for (name, g), q in zip(grads, [q for q in fused.parameters() if q.requires_grad], strict=True):
        torch.testing.assert_close(q.grad, g, rtol=1e-5, atol=1e-7, msg=name)
    assert fused.state_dict().keys() == peft_model.state_dict().keys()
    with torch.no_grad(), fused.disable_adapter():  # the paths it does not cover go through peft's own forward
        base = fused(ids).logits
    assert not torch.allclose(base, got, atol=1e-3)


def test_optimizer_is_fused_for_plain_tensors_and_steps_like_the_loop():
    import copy

    import torch

    model = tiny_llama()
    other = copy.deepcopy(model)
    opt = build_optimizer(model, lr=1e-2)
    assert all(g["fused"] for g in opt.param_groups)
    loop = torch.optim.AdamW(other.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0, foreach=False)
    ids = torch.randint(3, 500, (2, 9), generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        for m, o in ((model, opt), (other, loop)):
            m(ids).logits.square().mean().backward()
            o.step()
            o.zero_grad(set_to_none=True)
    for p, q in zip(model.parameters(), other.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
