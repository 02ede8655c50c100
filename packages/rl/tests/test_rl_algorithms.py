"""Losses, logprobs and advantages against hand-written references on small tensors."""

import math

import pytest
import torch

from anemone_rl.algorithms import (
    aggregate,
    clipped_policy_loss,
    dpo_loss,
    entropy_from_logits,
    equal_reward_groups,
    group_advantages,
    k3_kl,
    sequence_logprobs,
    shifted_token_logprobs,
    token_logprobs,
)


def test_token_logprobs_match_hand_softmax():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])  # (1, 2, 3)
    targets = torch.tensor([[2, 1]])
    got = token_logprobs(logits, targets)
    z = math.exp(1) + math.exp(2) + math.exp(3)
    want = torch.tensor([[3 - math.log(z), -math.log(3)]])
    torch.testing.assert_close(got, want)
    # temperature divides the logits first
    got_t = token_logprobs(logits, targets, temperature=2.0)
    z2 = math.exp(0.5) + math.exp(1.0) + math.exp(1.5)
    assert got_t[0, 0].item() == pytest.approx(1.5 - math.log(z2), abs=1e-6)


def test_shifted_logprobs_align_next_token():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    got = shifted_token_logprobs(logits, ids)
    assert got.shape == (2, 4)
    want = torch.log_softmax(logits, -1)[0, 2, ids[0, 3]]
    assert got[0, 2].item() == pytest.approx(want.item(), abs=1e-6)


def test_entropy_uniform_and_peaked():
    ent = entropy_from_logits(torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]]))
    torch.testing.assert_close(ent, torch.tensor([[math.log(4), 0.0]]), atol=1e-5, rtol=0)


def test_sequence_logprobs_and_aggregate():
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(sequence_logprobs(lp, mask), torch.tensor([-3.0, -15.0]))
    torch.testing.assert_close(sequence_logprobs(lp, mask, average=True), torch.tensor([-1.5, -5.0]))
    assert aggregate(lp, mask, "token").item() == pytest.approx(-18 / 5)
    assert aggregate(lp, mask, "sequence").item() == pytest.approx((-1.5 - 5.0) / 2)


def test_aggregate_microbatches_sum_to_full_batch():
    torch.manual_seed(1)
    x = torch.randn(4, 6)
    mask = (torch.rand(4, 6) > 0.3).long()
    for norm in ("token", "sequence"):
        full = aggregate(x, mask, norm)
        n_tok, n_seq = float(mask.sum()), 4.0
        parts = sum(aggregate(x[i : i + 2], mask[i : i + 2], norm, n_tok, n_seq) for i in (0, 2))
        torch.testing.assert_close(parts, full)


def test_dpo_loss_is_ln2_when_policy_equals_reference():
    lp = torch.tensor([-3.0, -7.5, -1.0])
    lr = torch.tensor([-4.0, -2.0, -9.0])
    loss, stats = dpo_loss(lp, lr, lp.clone(), lr.clone(), beta=0.1)
    torch.testing.assert_close(loss, torch.full((3,), math.log(2)))
    assert stats["margin"].abs().max().item() == 0.0
    ipo, _ = dpo_loss(lp, lr, lp.clone(), lr.clone(), beta=0.5, loss_type="ipo")
    torch.testing.assert_close(ipo, torch.full((3,), 1.0))  # (0 - 1/(2*0.5))^2


def test_dpo_sigmoid_loss_and_gradient_match_hand_formula():
    beta, eps = 0.3, 0.1
    pc = torch.tensor([-2.0, -5.0], requires_grad=True)
    pr = torch.tensor([-3.0, -4.0], requires_grad=True)
    rc, rr = torch.tensor([-2.5, -5.5]), torch.tensor([-2.0, -4.5])
    loss, stats = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=eps)
    loss.sum().backward()
    for i in range(2):
        h = (pc[i] - pr[i] - rc[i] + rr[i]).item()
        sig = 1 / (1 + math.exp(-beta * h))
        want = -(1 - eps) * math.log(sig) - eps * math.log(1 - sig)
        assert loss[i].item() == pytest.approx(want, abs=1e-6)
        # d/dh = -(1-eps) beta (1 - sig) + eps beta sig; dh/dpc = 1, dh/dpr = -1
        dh = -(1 - eps) * beta * (1 - sig) + eps * beta * sig
        assert pc.grad[i].item() == pytest.approx(dh, abs=1e-6)
        assert pr.grad[i].item() == pytest.approx(-dh, abs=1e-6)
    assert stats["chosen_reward"][0].item() == pytest.approx(beta * 0.5)


def test_ipo_loss_and_gradient():
    beta = 0.25
    pc = torch.tensor([-1.0], requires_grad=True)
    loss, _ = dpo_loss(pc, torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.0]), beta, "ipo")
    h = (-1.0 + 2.0) - (-1.5 + 1.0)  # 1.5
    assert loss.item() == pytest.approx((h - 2.0) ** 2)
    loss.sum().backward()
    assert pc.grad.item() == pytest.approx(2 * (h - 2.0))


def test_group_advantages_hand_values():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])  # two groups of 4
    adv = group_advantages(r, 4, scale_by_std=False)
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))
    std = torch.tensor([1.0, 0.0, 0.0, 1.0]).std().item()  # unbiased, = 0.57735
    adv_s = group_advantages(r, 4)
    assert adv_s[0].item() == pytest.approx(0.5 / (std + 1e-6), rel=1e-5)
    # leave-one-out: baseline of sample 0 is mean(0, 0, 1) = 1/3
    loo = group_advantages(r, 4, leave_one_out=True, scale_by_std=False)
    assert loo[0].item() == pytest.approx(1 - 1 / 3)
    assert loo[1].item() == pytest.approx(0 - 2 / 3)


def test_advantages_zero_when_group_rewards_equal():
    r = torch.tensor([0.7, 0.7, 0.7, 0.0, 0.0, 0.0])
    for loo in (False, True):
        assert group_advantages(r, 3, leave_one_out=loo).abs().max().item() == 0.0
    assert equal_reward_groups(torch.tensor([1.0, 1.0, 0.0, 1.0]), 2).tolist() == [True, False]
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(r, 1)


def test_k3_kl_zero_when_equal_and_matches_formula():
    lp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    assert k3_kl(lp, lp.detach().clone()).abs().max().item() == 0.0
    ref = torch.tensor([[-1.5, -1.0, -0.5]])
    kl = k3_kl(lp, ref)
    d = (ref - lp).detach()
    torch.testing.assert_close(kl.detach(), d.exp() - d - 1)
    assert (kl >= 0).all()
    kl.sum().backward()
    torch.testing.assert_close(lp.grad, 1 - d.exp())  # d/dlogp of exp(ref-logp) - (ref-logp) - 1


def test_clipped_policy_loss_value_gradient_and_clip_fraction():
    old = torch.zeros(2, 3)
    # ratios: exp(0.5)=1.65 (clipped above for A>0), exp(-0.5)=0.61 (clipped below for A<0), 1.0
    lp = torch.tensor([[0.5, 0.0, 0.1], [-0.5, 0.0, 0.0]], requires_grad=True)
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    loss, stats = clipped_policy_loss(lp, old, adv, mask, eps_low=0.2, eps_high=0.3, normalization="token")
    ratio = lp.detach().exp()
    want_tok = [
        [-min(ratio[0, 0] * 1, 1.3), -1.0, -min(ratio[0, 2].item(), 1.3)],
        [-min(ratio[1, 0] * -2, 0.8 * -2), 2.0, 0.0],
    ]
    want = sum(float(v) for v in want_tok[0]) + float(want_tok[1][0]) + float(want_tok[1][1])
    assert loss.item() == pytest.approx(want / 5, abs=1e-6)
    loss.backward()
    # clipped tokens get zero gradient; others -A * ratio / n_tokens
    g = lp.grad
    assert g[0, 0].item() == 0.0 and g[1, 0].item() == 0.0
    assert g[0, 1].item() == pytest.approx(-1.0 / 5)
    assert g[0, 2].item() == pytest.approx(-ratio[0, 2].item() / 5, abs=1e-6)
    assert g[1, 1].item() == pytest.approx(2.0 / 5)
    assert g[1, 2].item() == 0.0  # masked
    assert stats["clip_fraction"].item() == pytest.approx(2 / 5)


def test_clipped_policy_loss_with_kl_and_sequence_normalization():
    torch.manual_seed(0)
    lp = torch.randn(3, 4) * 0.1
    mask = torch.ones(3, 4)
    mask[2, 2:] = 0
    adv = torch.tensor([1.0, -1.0, 0.5])
    base, _ = clipped_policy_loss(lp, lp, adv, mask, normalization="sequence")
    # ratio 1 everywhere: per-token loss is -A; sequence mean of -A over 3 sequences
    assert base.item() == pytest.approx(-(1.0 - 1.0 + 0.5) / 3, abs=1e-6)
    ref = lp + 0.2
    loss, stats = clipped_policy_loss(lp, lp, adv, mask, 0.2, 0.2, "sequence", ref, kl_beta=0.5)
    kl_tok = math.exp(0.2) - 0.2 - 1
    assert stats["kl"].item() == pytest.approx(kl_tok, rel=1e-5)
    assert loss.item() == pytest.approx(base.item() + 0.5 * kl_tok, rel=1e-5)
    same, stats0 = clipped_policy_loss(lp, lp, adv, mask, ref_logprobs=lp, kl_beta=1.0)
    assert stats0["kl"].item() == 0.0


def test_forward_logprobs_with_response_mask_skips_prompt_logits_only():
    from anemone_core.testing import tiny_model
    from anemone_rl.policy import build_batch, forward_logprobs

    model = tiny_model("llama", seed=6)
    batch = build_batch([[5, 6, 7, 8, 9], [10, 11, 12]], [[13, 14], [15, 16, 17, 18]], pad_id=0)
    mask = batch["response_mask"]  # first scored column: 2 (second row's prompt has 3 tokens)
    full, ent_full = forward_logprobs(model, batch["input_ids"], batch["attention_mask"], 0.7, with_entropy=True)
    cut, ent_cut = forward_logprobs(model, batch["input_ids"], batch["attention_mask"], 0.7, with_entropy=True,
                                    response_mask=mask)
    assert cut.shape == full.shape and ent_cut.shape == ent_full.shape
    torch.testing.assert_close(cut[mask > 0], full[mask > 0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ent_cut[mask > 0], ent_full[mask > 0], atol=1e-6, rtol=1e-6)
    assert (cut[:, :2] == 0).all()
