"""Shared-prompt logprobs (each distinct prompt of a micro-batch run once) against the plain forward."""

import pytest
import torch

from anemone_core.testing import tiny_model
from anemone_rl.policy import build_batch, forward_logprobs
from anemone_rl.shared_prompt import distinct_prompts, prompt_lengths, shared_prompt_logprobs

PROMPTS = [[5, 17, 33, 8, 91, 100], [7, 3, 9], [250, 251, 252, 9]]
# GRPO-shaped: three prompts (different lengths) x 3 responses (different lengths), rows in group order
RESPONSES = [[40, 41, 42], [43], [44, 45, 46, 47, 48], [50, 51], [52, 53, 54, 55], [56],
             [60, 61, 62, 63], [64, 65], [66]]


def _batch():
    prompts = [p for p in PROMPTS for _ in range(3)]
    return build_batch(prompts, RESPONSES, pad_id=0)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_shared_prompt_logprobs_entropy_and_gradients_match_the_plain_forward(arch):
    model = tiny_model(arch, seed=7)
    batch = _batch()
    mask = batch["response_mask"]
    weights = torch.randn(mask.shape)  # a loss that weighs every response token differently

    def run(share):
        model.zero_grad()
        lp, ent = forward_logprobs(model, batch["input_ids"], batch["attention_mask"], temperature=0.7,
                                   with_entropy=True, response_mask=mask, share_prompts=share)
        ((lp * mask * weights).sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return lp.detach(), ent, grads

    lp0, ent0, g0 = run(False)
    lp1, ent1, g1 = run(True)
    torch.testing.assert_close(lp1 * mask, lp0 * mask, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent1 * mask, ent0 * mask, atol=1e-5, rtol=1e-5)
    assert g0.keys() == g1.keys() and len(g0) > 10
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-5, rtol=1e-4, msg=name)


def test_the_prompts_run_once_and_sharing_steps_aside_when_it_cannot_help():
    model = tiny_model("llama", seed=7)
    batch = _batch()
    plen = prompt_lengths(batch["response_mask"])
    assert plen.tolist() == [6, 6, 6, 3, 3, 3, 4, 4, 4]
    prompts, which = distinct_prompts(batch["input_ids"], plen)
    assert prompts == PROMPTS and which.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    rows = []
    forward = model.forward
    model.forward = lambda **kw: rows.append(kw["input_ids"].shape) or forward(**kw)
    shared_prompt_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    assert rows == [(3, 6), (9, 5)]  # 3 prompts of up to 6 tokens, then 9 responses of up to 5
    # every prompt distinct, or a row with no response token: the caller runs the plain forward
    one_each = build_batch(PROMPTS, RESPONSES[:3], pad_id=0)
    assert shared_prompt_logprobs(model, one_each["input_ids"], one_each["attention_mask"],
                                  one_each["response_mask"]) is None
    empty = build_batch([PROMPTS[0]] * 2, [[40], []], pad_id=0)
    assert prompt_lengths(empty["response_mask"]) is None


def test_sliding_window_models_take_the_plain_forward():
    model = tiny_model("qwen2", seed=7, use_sliding_window=True, sliding_window=4)
    batch = _batch()
    assert shared_prompt_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"]) is None
    lp, _ = forward_logprobs(model, batch["input_ids"], batch["attention_mask"], response_mask=batch["response_mask"],
                             share_prompts=True)  # falls back: still the model's logprobs
    plain, _ = forward_logprobs(model, batch["input_ids"], batch["attention_mask"], response_mask=batch["response_mask"])
    torch.testing.assert_close(lp, plain)
