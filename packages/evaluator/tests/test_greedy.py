"""The continuous-batching greedy decoder against HF `generate`, one prompt at a time (the definition)."""

import pytest
import torch

from anemone_evaluator.greedy import _common_prefix, _lookup, greedy_decode
from anemone_evaluator.local_target import LocalTarget
from anemone_evaluator.requests import GenRequest

torch.set_num_threads(1)

PROMPTS = ["Question: What is 12 + 30?\nAnswer:", "Question: What is 7 - 9?\nAnswer:", "Question: Why?",
           "Question: What is 12 + 30? What is 12 + 30? What is 12", "Question: a b c a b c a b"]


def reference(t: LocalTarget, prompt: str, max_new: int) -> list[int]:
    ids = torch.tensor([t.encode(prompt)])
    out = t.model.generate(ids, max_new_tokens=max_new, do_sample=False, pad_token_id=t.pad_id)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("draft_tokens", [0, 4])
@pytest.mark.parametrize("max_rows", [1, 2, 16])
def test_equals_generate_one_by_one(tiny_dir, draft_tokens, max_rows):
    t = LocalTarget(tiny_dir)
    prompts = [t.encode(p) for p in PROMPTS]
    budgets = [3, 9, 1, 12, 7]  # sequences finish at different steps, so rows are refilled mid-run
    got = greedy_decode(t.model, prompts, budgets, lambda i, toks: False, set(), max_rows=max_rows,
                        draft_tokens=draft_tokens, prefill_tokens=16)
    assert got == [reference(t, p, n) for p, n in zip(PROMPTS, budgets, strict=True)]


def test_stops_at_the_first_stop_string_and_eos(tiny_dir):
    t = LocalTarget(tiny_dir, batch_size=2)
    free = [t.tok.decode(reference(t, p, 12), skip_special_tokens=True) for p in PROMPTS]
    stop = next(c for c in free[3][2:] if c.strip())  # a character the model produces mid-answer
    got = t.generate([GenRequest(p, (stop,), 12) for p in PROMPTS])
    assert got == [f.split(stop)[0] for f in free]
    check = t._stop_check((stop,))
    toks = greedy_decode(t.model, [t.encode(PROMPTS[3])], [12], lambda i, x: check(x), set())[0]
    assert stop in t.tok.decode(toks) and stop not in t.tok.decode(toks[:-1])  # stopped right there
    first = reference(t, PROMPTS[0], 1)[0]  # pretend the first greedy token is EOS: the row stops there
    assert greedy_decode(t.model, [t.encode(PROMPTS[0])], [12], lambda i, toks: False, {first}) == [[first]]


def test_prefix_and_lookup_helpers():
    assert _common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == [1, 2]
    assert _common_prefix([[1, 2], [1, 2]]) == [1]  # every prompt keeps a token of its own
    assert _common_prefix([[7]]) == []
    assert _lookup([5, 6, 7, 8, 9, 6, 7], 2) == [8, 9]  # the last bigram (6, 7) was followed by 8, 9
    assert _lookup([1, 2, 3], 4) == []
