import json

import pytest
import torch

from anemone_evaluator.eval_config import EvalConfig
from anemone_evaluator.local_target import LocalTarget, rolling_windows
from anemone_evaluator.requests import GenRequest, LoglikRequest, RollingRequest
from anemone_evaluator.runner import evaluate

torch.set_num_threads(1)

REQS = [LoglikRequest(f"Question: what is {a} + 3?\nAnswer:", f" {c}") for a in range(4) for c in (a + 3, 17, 100)]
REQS += [LoglikRequest("", "hello world"), LoglikRequest("Hello ", "world. The quick")]


def brute_force(target: LocalTarget, req: LoglikRequest) -> float:
    """The definition: one plain HF forward over context + continuation, no packing, no batching."""
    ctx, cont = target.encode_pair(req.prompt, req.continuation)
    logits = target.model(torch.tensor([ctx + cont])).logits[0, :-1]
    logp = torch.log_softmax(logits, -1)
    return sum(logp[len(ctx) - 1 + j, cont[j]].item() for j in range(len(cont)))


@pytest.mark.parametrize("prefix_cache", [True, False])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_loglikelihood_matches_plain_forward(tiny_dir, prefix_cache, batch_size):
    target = LocalTarget(tiny_dir, batch_size=batch_size, prefix_cache=prefix_cache, pack_tokens=8)
    got = target.loglikelihood(REQS)
    ref = [brute_force(target, r) for r in REQS]
    torch.testing.assert_close(torch.tensor([g[0] for g in got]), torch.tensor(ref), atol=1e-5, rtol=1e-5)


def test_encode_pair_moves_trailing_space_like_lmeval(tiny_dir):
    t = LocalTarget(tiny_dir)
    ctx, cont = t.encode_pair("Hello ", "world")
    assert ctx == t.encode("Hello") and ctx + cont == t.encode("Hello world")
    assert t.encode_pair("", "hi")[0] == [t.prefix_id]


def test_rolling_windows_cover_every_token_once():
    tokens = list(range(10, 33))
    windows = rolling_windows(tokens, prefix=1, max_len=8)
    assert [t for _, cont in windows for t in cont] == tokens
    assert windows[0][0] == [1] and all(len(c) + len(x) - 1 <= 8 for x, c in windows)


def test_rolling_equals_sum_of_windows(tiny_dir):
    text = "The quick brown fox jumps over the lazy dog. " * 4
    t = LocalTarget(tiny_dir, max_length=16)
    whole = t.loglikelihood_rolling([RollingRequest(text)])[0]
    toks = t.encode(text)
    manual = sum(ll for ll, _ in t.score_tokens(rolling_windows(toks, t.prefix_id, 16)))
    assert whole == pytest.approx(manual)


def test_generation_is_greedy_and_stops(tiny_dir):
    t = LocalTarget(tiny_dir, batch_size=2)
    reqs = [GenRequest("Hello, world! The", (), 6), GenRequest("12 + 34 =", (" ",), 6), GenRequest("Paris", (), 3)]
    out = t.generate(reqs)
    assert all(" " not in o for o in [out[1]])
    ids = torch.tensor([t.encode("Hello, world! The")])
    ref = t.model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=t.pad_id)
    assert out[0] == t.tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)


def test_scores_do_not_change_with_batch_size(tiny_dir):
    runs = []
    for bs in (1, 5, 32):
        cfg = EvalConfig(model=str(tiny_dir), limit=12, local={"batch_size": bs})
        _, records = evaluate(cfg, progress=False)
        runs.append(records)
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            assert a["scores"] == pytest.approx(b["scores"], abs=1e-5), (a, b)
            assert a.get("response") == b.get("response")
    assert json.dumps([r["scores"] for r in runs[0]])  # serializable


@pytest.mark.gpu
def test_cuda_scores_match_cpu(tiny_dir):
    cpu = LocalTarget(tiny_dir).loglikelihood(REQS)
    gpu = LocalTarget(tiny_dir, device="cuda").loglikelihood(REQS)
    torch.testing.assert_close(torch.tensor([g[0] for g in gpu]), torch.tensor([c[0] for c in cpu]),
                               atol=1e-3, rtol=1e-4)


def test_cuda_without_gpu_is_a_clear_error(tiny_dir):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from anemone_core.errors import AnemoneError

    with pytest.raises(AnemoneError, match="--device cuda but no CUDA GPU"):
        LocalTarget(tiny_dir, device="cuda")
