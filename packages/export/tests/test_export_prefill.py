"""Shared-prefix prefill: grouping, and scores equal to each prompt run alone."""

from __future__ import annotations

import torch

from anemone_export.server.engine import torch_step
from anemone_export.server.prefill import left_padded, prefill, prefix_groups


def test_groups_keep_questions_apart_and_leave_each_member_a_suffix():
    q1 = [5, 6, 7, 8, 9, 10, 11, 12]
    q2 = [5, 6, 7, 20, 21, 22, 23, 24]  # shares only a 3-token template with q1
    prompts = [q1 + [1], q2 + [2], q1 + [3, 4], q2 + [2, 9], q1]
    groups = sorted((n, sorted(m)) for n, m in prefix_groups(prompts))
    assert groups == [(7, [0, 2, 4]), (8, [1, 3])]  # q1's group capped one short of its shortest member (q1)


def test_shared_prefix_prefill_scores_as_each_prompt_alone(tiny_source):
    step, layout = torch_step(tiny_source.model)
    tok = tiny_source.tokenizer
    context = "Question: what is twelve plus thirty five, written as digits?\nAnswer:"
    texts = [context + c for c in (" 47", " 46", " fifty", " 47.")] + ["Hello there", "Hello there, how are"]
    prompts = [tok(t)["input_ids"] for t in texts]
    shared = prefill(step, layout, prompts, all_logits=True)
    assert shared.shared_tokens > 0  # the four choices share their context
    for b, p in enumerate(prompts):
        ids, mask = left_padded([p])
        alone, *_ = step(ids, mask, torch.arange(len(p))[None], *layout.empty(1), all_logits=True)
        torch.testing.assert_close(shared.logits[b], alone[0], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(shared.last[b], alone[0, -1], atol=2e-5, rtol=1e-4)
    # The cache continues decoding like the one a prompt builds alone.
    nxt = shared.last.argmax(-1)
    mask = torch.cat([shared.mask, torch.ones(len(prompts), 1, dtype=torch.long)], 1)
    pos = (mask.cumsum(-1) - 1)[:, -1:]
    logits, *_ = step(nxt[:, None], mask, pos, *shared.cache, all_logits=False)
    for b, p in enumerate(prompts):
        ids, m = left_padded([p + [int(nxt[b])]])
        alone, *_ = step(ids, m, torch.arange(len(p) + 1)[None], *layout.empty(1), all_logits=False)
        torch.testing.assert_close(logits[b, -1], alone[0, -1], atol=2e-5, rtol=1e-4)


def test_prompts_without_a_common_prefix_take_one_pass(tiny_source):
    step, layout = torch_step(tiny_source.model)
    out = prefill(step, layout, [[3, 4, 5], [9, 8, 7, 6]], all_logits=False)
    assert out.shared_tokens == 0 and out.logits is None and out.last.shape[0] == 2


def test_onnx_step_shares_prefixes_like_torch(tiny_source, tmp_path):
    """The exported ONNX graph takes the same holes in its attention mask (padding between prefix and suffix)."""
    from anemone_export.onnx_export import export_onnx
    from anemone_export.server.engine import onnx_step

    export_onnx(tiny_source, tmp_path / "onnx")
    step, layout = onnx_step(tmp_path / "onnx" / "model.onnx")
    tstep, _ = torch_step(tiny_source.model)
    tok = tiny_source.tokenizer
    prompts = [tok("Question: name a colour of the sky on a clear day.\nAnswer:" + c)["input_ids"]
               for c in (" blue", " green and grey")]
    shared = prefill(step, layout, prompts, all_logits=True)
    assert shared.shared_tokens > 0
    for b, p in enumerate(prompts):
        ids, mask = left_padded([p])
        alone, *_ = tstep(ids, mask, torch.arange(len(p))[None], *layout.empty(1), all_logits=True)
        torch.testing.assert_close(shared.logits[b], alone[0], atol=5e-4, rtol=1e-3)
