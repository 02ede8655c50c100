"""Agreement with lm-evaluation-harness 0.4.13, side by side in one run, on the same task YAML files.

Default run: the tiny model (fast, and random weights make near-ties rare but numbers arbitrary, a strict
check of tokenization and scoring). Slow run: the embedded SmolLM2-135M on all built-in documents.
"""

import pytest
import torch

from anemone_evaluator.eval_config import EvalConfig
from anemone_evaluator.lmeval_ref import run_lmeval
from anemone_evaluator.runner import evaluate
from anemone_evaluator.tasks import resolve_tasks

pytest.importorskip("lm_eval")
TASKS = ["arith_mc", "arith_gen", "stdlib_docs"]


def compare(model_dir, limit: int | None, batch_size: int, tasks=tuple(TASKS), chat: bool = False) -> dict:
    torch.set_num_threads(1)
    ref = run_lmeval(model_dir, resolve_tasks(list(tasks)), limit=limit, batch_size=batch_size,
                     apply_chat_template=chat)
    ours, records = evaluate(EvalConfig(model=str(model_dir), tasks=list(tasks), limit=limit, chat_template=chat,
                                        local={"batch_size": batch_size}), progress=False)
    report = {}
    for task in tasks:
        mine = [r for r in records if r["task"] == task]
        theirs = ref[task]["samples"]
        assert [r["doc_id"] for r in mine] == [s["doc_id"] for s in theirs]
        if task == "arith_mc":
            ll_ours = torch.tensor([r["loglikelihoods"] for r in mine])
            ll_ref = torch.tensor([[resp[0][0] for resp in s["resps"]] for s in theirs])
            torch.testing.assert_close(ll_ours, ll_ref, atol=2e-4, rtol=1e-5)
            agree = [r["scores"]["acc"] == s["acc"] and r["scores"]["acc_norm"] == s["acc_norm"]
                     for r, s in zip(mine, theirs, strict=True)]
        elif task == "arith_gen":
            agree = [r["response"] == s["resps"][0][0] and r["extracted"] == s["filtered_resps"][0]
                     and r["scores"]["exact_match"] == s["exact_match"] for r, s in zip(mine, theirs, strict=True)]
        else:
            ll_ours = torch.tensor([r["loglikelihood"] for r in mine])
            ll_ref = torch.tensor([s["resps"][0][0] for s in theirs])
            torch.testing.assert_close(ll_ours, ll_ref, atol=1e-3, rtol=1e-5)
            agree = [True] * len(mine)
        report[task] = {"agreement": sum(agree) / len(agree), "ours": {m: v["value"] for m, v in
                        ours["tasks"][task]["metrics"].items()}, "lmeval": ref[task]["metrics"]}
    return report


def test_agrees_with_lmeval_on_tiny_model(tiny_dir):
    report = compare(tiny_dir, limit=12, batch_size=8)
    for task, r in report.items():
        assert r["agreement"] == 1.0, (task, r)
        for metric, value in r["ours"].items():
            assert value == pytest.approx(r["lmeval"][metric], rel=1e-4), (task, metric, r)


@pytest.mark.slow
def test_agrees_with_lmeval_with_chat_template(tiny_dir):
    # lm-eval wraps the prompt as one user turn and drops the target delimiter after the assistant header.
    report = compare(tiny_dir, limit=4, batch_size=4, tasks=("arith_mc", "arith_gen"), chat=True)
    assert all(r["agreement"] == 1.0 for r in report.values()), report


@pytest.mark.slow
def test_agrees_with_lmeval_on_embedded_model():
    from anemone_core.models import default_model_dir

    report = compare(default_model_dir(), limit=None, batch_size=16)
    for task, r in report.items():
        assert r["agreement"] >= 0.99, (task, r)
    for metric in ("acc", "acc_norm"):
        assert report["arith_mc"]["ours"][metric] == report["arith_mc"]["lmeval"][metric]
    assert report["arith_gen"]["ours"]["exact_match"] == report["arith_gen"]["lmeval"]["exact_match"]
