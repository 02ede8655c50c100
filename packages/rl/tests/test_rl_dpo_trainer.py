"""DPO and SFT end to end on a tiny model: invariants, exact resume, gradient accumulation."""

import copy
import json

import pytest
import torch

from anemone_core.config import load_config
from anemone_core.errors import ConfigError
from anemone_core.metrics import read_metrics
from anemone_rl.dpo_config import DPOConfig
from anemone_rl.dpo_trainer import train as train_dpo
from anemone_rl.sft_config import SFTConfig
from anemone_rl.sft_trainer import sft_step, sft_tokenizer
from anemone_rl.sft_trainer import train as train_sft


def _dpo(tiny_dir, out, *extra):
    return load_config(DPOConfig, None, [f"model.path={tiny_dir}", f"run.out={out}", "run.progress=false",
                                         "data.eval_pairs=8", "dpo.batch_size=4", "dpo.micro_batch_size=2",
                                         "optim.lr=1e-3", *extra])


def test_dpo_starts_at_ln2_and_learns(tiny_dir, tmp_path):
    s = train_dpo(_dpo(tiny_dir, tmp_path / "run", "dpo.steps=3"))
    assert s["eval_start"]["eval_loss"] == pytest.approx(0.693147, abs=1e-5)  # policy == reference
    # policy == reference: margins 0 up to float rounding (one ulp of a logprob: the shared-prompt forward's
    # kernels may round differently for a model whose parameters require grad)
    assert s["eval_start"]["eval_margin"] == pytest.approx(0.0, abs=1e-6)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 3]
    assert rows[1]["loss"] == pytest.approx(0.693147, abs=1e-4)  # the first step sees policy == reference
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_dpo_resume_after_kill_matches_uninterrupted(tiny_dir, tmp_path):
    full = _dpo(tiny_dir, tmp_path / "full", "dpo.steps=4", "run.checkpoint_every=2", "data.eval=null")
    train_dpo(full)
    cut = _dpo(tiny_dir, tmp_path / "cut", "dpo.steps=4", "run.checkpoint_every=2", "data.eval=null")
    assert train_dpo(cut, stop_after=3)["stopped_at"] == 3  # killed after step 3; the checkpoint is step 2
    resumed = train_dpo(cut)
    assert resumed["start_step"] == 2
    a = read_metrics(tmp_path / "full" / "metrics.jsonl")
    b = read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        for k in ("loss", "margin", "grad_norm", "lr"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7), (ra["step"], k)


def test_dpo_refuses_changed_config_on_resume(tiny_dir, tmp_path):
    train_dpo(_dpo(tiny_dir, tmp_path / "r", "dpo.steps=1", "data.eval=null"))
    from anemone_core.errors import AnemoneError

    with pytest.raises(AnemoneError, match="different config"):
        train_dpo(_dpo(tiny_dir, tmp_path / "r", "dpo.steps=1", "data.eval=null", "dpo.beta=0.5"))
    with pytest.raises(AnemoneError, match="holds a finished run"):
        train_dpo(_dpo(tiny_dir, tmp_path / "r", "dpo.steps=1", "data.eval=null"))


def test_wrong_model_path_leaves_no_run_folder(tmp_path):
    """A wrong model.path is refused before the run folder is made (or, with overwrite, wiped)."""
    from anemone_core.errors import AnemoneError

    with pytest.raises(AnemoneError, match="does not exist"):
        train_dpo(_dpo(tmp_path / "nope", tmp_path / "run", "dpo.steps=1"))
    assert not (tmp_path / "run").exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(AnemoneError, match="does not exist"):
        train_dpo(_dpo(tmp_path / "nope", tmp_path / "kept", "dpo.steps=1", "run.overwrite=true"))
    assert (tmp_path / "kept" / "metrics.jsonl").is_file()


def test_dpo_finished_run_is_extended_by_raising_steps(tiny_dir, tmp_path):
    """A finished 2-step run re-run with dpo.steps=4 resumes at step 2 and equals a 4-step run (constant lr,
    step-indexed data)."""
    full = train_dpo(_dpo(tiny_dir, tmp_path / "full", "dpo.steps=4", "data.eval=null"))
    assert full["start_step"] == 0
    train_dpo(_dpo(tiny_dir, tmp_path / "ext", "dpo.steps=2", "data.eval=null", "run.overwrite=true"))
    extended = train_dpo(_dpo(tiny_dir, tmp_path / "ext", "dpo.steps=4", "data.eval=null"))  # overwrite not compared
    assert extended["start_step"] == 2
    a = read_metrics(tmp_path / "full" / "metrics.jsonl")
    b = read_metrics(tmp_path / "ext" / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5, abs=1e-7), ra["step"]


def test_dpo_config_errors_name_values():
    with pytest.raises(ConfigError, match="batch_size = 6 does not split into micro_batch_size = 4"):
        load_config(DPOConfig, None, ["dpo.batch_size=6", "dpo.micro_batch_size=4"])
    with pytest.raises(ConfigError, match="dpo.beta"):
        load_config(DPOConfig, None, ["dpo.beta=0"])


def test_dpo_on_user_pairs_with_sft_term(tiny_dir, tmp_path):
    p = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "2+2?", "chosen": "4", "rejected": "5"},
            {"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
             "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}]}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = train_dpo(_dpo(tiny_dir, tmp_path / "u", "dpo.steps=2", f"data.train={p}", "data.eval=null",
                       "dpo.sft_weight=1.0", "dpo.loss_type=ipo", "dpo.batch_size=2"))
    assert s["pairs"] == 2 and s["last"]["sft_loss"] > 0


def test_sft_gradient_accumulation_is_exact(tiny_dir):
    from anemone_automodel.model import load_model, load_tokenizer
    from anemone_rl.config import OptimConfig
    from anemone_rl.data import load_rows
    from anemone_rl.local_state import LocalState

    tok = load_tokenizer(tiny_dir)
    examples = [sft_tokenizer(tok, 64, "data")(r) for r in load_rows("arithmetic:test")[:8]]
    base = load_model(tiny_dir)
    updated = []
    for micro in (8, 2):
        model = copy.deepcopy(base)
        state = LocalState(model, tok, OptimConfig(lr=1e-2), total_steps=1)
        sft_step(state, examples, micro, tok.pad_token_id)
        updated.append(model.model.layers[0].mlp.up_proj.weight.detach().clone())
    torch.testing.assert_close(updated[0], updated[1], atol=1e-6, rtol=1e-5)


def test_sft_runs_and_reports_accuracy(tiny_dir, tmp_path):
    cfg = load_config(SFTConfig, None, [f"model.path={tiny_dir}", f"run.out={tmp_path / 's'}", "run.progress=false",
                                        "sft.steps=2", "data.eval_prompts=4", "data.eval_max_new_tokens=4"])
    s = train_sft(cfg)
    assert 0.0 <= s["eval_accuracy_end"] <= 1.0 and s["last"]["loss"] > 0


def test_arithmetic_pairs_per_question_reject_distinct_nearby_answers():
    from anemone_rl.dpo_trainer import load_preference_rows

    one = load_preference_rows("arithmetic:train", "data.train", seed=0)
    six = load_preference_rows("arithmetic:train", "data.train", seed=0, per_question=6)
    assert len(six) == 6 * len(one) == 12000
    first = six[:6]
    assert {p["chosen"] for p in first} == {one[0]["chosen"]}
    assert sorted(int(p["rejected"]) - int(p["chosen"]) for p in first) == [-10, -2, -1, 1, 2, 10]
    # the held-out pairs (one per question, seed + 1) are built exactly as before
    import random

    from anemone_rl.data import load_rows
    from anemone_rl.data.arithmetic import OFFSETS

    rng = random.Random(1)
    expected = [{"prompt": r["prompt"], "chosen": r["answer"], "rejected": str(int(r["answer"]) + rng.choice(OFFSETS))}
                for r in load_rows("arithmetic:test")]
    assert load_preference_rows("arithmetic:test", "data.eval", seed=1) == expected
    with pytest.raises(ConfigError, match="pairs_per_question = 3 builds pairs from the built-in"):
        load_config(DPOConfig, None, ["data.pairs_per_question=3", "data.train=pairs.jsonl"])


def test_verifier_pairs_reject_own_wrong_answers():
    from anemone_rl.data.onpolicy import verifier_pairs

    rows = [{"prompt": "2+2?", "answer": "4"}, {"prompt": "3+3?", "answer": "6"}, {"prompt": "1+1?", "answer": "2"}]
    samples = [[" 4", "5", "5", "3", ""], ["7", "8"], ["2", "2"]]
    rewards = [[1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]
    pairs = verifier_pairs(rows, samples, rewards, max_per_question=4)
    # distinct non-empty wrong answers; chosen = a sampled right answer, else the reference answer; none when all right
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [
        ("2+2?", "4", "5"), ("2+2?", "4", "3"), ("3+3?", "6", "7"), ("3+3?", "6", "8")]
    assert len(verifier_pairs(rows, samples, rewards, max_per_question=1)) == 2
    from anemone_core.errors import AnemoneError

    with pytest.raises(AnemoneError, match="one list of samples"):
        verifier_pairs(rows, samples[:2], rewards, max_per_question=1)


@pytest.mark.slow
def test_onpolicy_build_writes_pairs_dpo_can_train_on(tiny_dir, tmp_path):
    from anemone_rl.data.onpolicy import build

    s = build(str(tiny_dir), str(tmp_path / "p.jsonl"), questions=4, samples=4, max_new_tokens=4)
    assert s["questions"] == 4 and s["samples"] == 16
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == s["pairs"] and all(r["chosen"] != r["rejected"] for r in rows)


def test_dpo_with_the_shared_prompt_forward_matches_the_plain_forward(tiny_dir, tmp_path):
    """Each pair's prompt run once (policy and reference, the default) or twice: the same run to float rounding."""
    runs = {}
    for share in ("true", "false"):
        train_dpo(_dpo(tiny_dir, tmp_path / share, "dpo.steps=3", f"dpo.share_prompt_forward={share}"))
        runs[share] = read_metrics(tmp_path / share / "metrics.jsonl")
    m1, m0 = runs["true"], runs["false"]
    for a, b in zip(m1, m0, strict=True):
        for k in ("loss", "margin", "grad_norm", "eval_reward_accuracy", "eval_margin"):
            if k in b:
                assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (b["step"], k)
    margins = [r["margin"] for r in m1 if "margin" in r]
    assert len(margins) == 3 and margins[-1] != margins[0]  # the runs moved: not a comparison of two no-ops


def test_a_run_from_before_a_new_option_resumes_if_the_option_keeps_its_default(tiny_dir, tmp_path):
    """A checkpoint written before `dpo.share_prompt_forward` existed: resuming with the default is the same
    run; with another value it is a different config."""
    from anemone_core.errors import AnemoneError

    out = tmp_path / "old"
    train_dpo(_dpo(tiny_dir, out, "dpo.steps=1", "data.eval=null"))
    state = out / "checkpoints" / "step-000001" / "state.json"
    saved = json.loads(state.read_text())
    del saved["config"]["dpo"]["share_prompt_forward"]  # as an older anemone-rl wrote it
    state.write_text(json.dumps(saved))
    with pytest.raises(AnemoneError, match=r"different config \(sections \['dpo'\]\)"):
        train_dpo(_dpo(tiny_dir, out, "dpo.steps=2", "data.eval=null", "dpo.share_prompt_forward=false"))
    assert train_dpo(_dpo(tiny_dir, out, "dpo.steps=2", "data.eval=null"))["start_step"] == 1

