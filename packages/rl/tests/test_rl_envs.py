"""Math verifier, reward registry and timeouts; the shipped arithmetic task and the data loaders."""

import json
import time

import pytest

from anemone_core.errors import AnemoneError
from anemone_rl.data import arithmetic_rows, load_arithmetic, load_rows, normalize_preference, prompt_messages
from anemone_rl.envs import RewardEnv, build_env, extract_answer, math_reward, register_reward, resolve_reward
from anemone_rl.envs.math_env import is_correct


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("The answer is 42.", "42"),
        ("12 + 30 = 42", "42"),
        ("so \\boxed{7} and later 9", "7"),
        ("\\boxed{\\frac{1}{2}} hmm", "2"),
        ("It is -15", "-15"),
        ("1,234 apples", "1,234"),
        ("no number here", None),
    ],
)
def test_extract_answer(text, want):
    assert extract_answer(text) == want


def test_is_correct_compares_numbers():
    assert is_correct("= 1,234", 1234)
    assert is_correct("x = 0.50", "1/2")
    assert is_correct("\\boxed{-3}", "-3")
    assert not is_correct("3 + 4 = 8", 7)
    assert not is_correct("", 7)
    assert math_reward({"answer": "68"}, "68") == 1.0


def test_reward_env_counts_errors_and_timeouts_without_hanging():
    def flaky(sample, response):
        if response == "boom":
            raise RuntimeError("bad reward")
        if response == "slow":
            time.sleep(2)
        return 1.0

    env = RewardEnv(flaky, timeout_s=0.2)
    t0 = time.perf_counter()
    res = env.step([{}, {}, {}], ["ok", "boom", "slow"])
    assert time.perf_counter() - t0 < 1.5
    assert [r.reward for r in res] == [1.0, 0.0, 0.0]
    assert env.counts == {"errors": 1, "timeouts": 1}
    assert "RuntimeError" in res[1].info["error"]
    env.close()


def test_registry_and_import_paths():
    @register_reward("always_one")
    def one(sample, response):
        return 1.0

    assert resolve_reward("always_one") is one
    assert resolve_reward("anemone_rl.envs.math_env:math_reward") is math_reward
    with pytest.raises(AnemoneError, match="env.reward = 'nope'"):
        resolve_reward("nope")
    with pytest.raises(AnemoneError, match="cannot import"):
        resolve_reward("no_such_module:fn")
    env = build_env("math")
    assert [r.reward for r in env.step([{"answer": "5"}], ["it is 5"])] == [1.0]


def test_shipped_arithmetic_files_equal_generation_and_splits_are_disjoint():
    for split in ("train", "test"):
        assert load_arithmetic(split) == arithmetic_rows(split)
    train = {r["question"] for r in load_arithmetic("train")}
    test = {r["question"] for r in load_arithmetic("test")}
    assert len(train) == 2000 and len(test) == 200 and not train & test
    row = load_arithmetic("test")[0]
    a, op, b = row["question"].split()
    assert str(int(a) + int(b) if op == "+" else int(a) - int(b)) == row["answer"]


def test_load_rows_formats(tmp_path):
    assert len(load_rows("arithmetic:test")) == 200
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": "hi", "answer": "1"}) + "\n\n")
    rows = load_rows(str(p))
    assert prompt_messages(rows[0]) == [{"role": "user", "content": "hi"}]
    import datasets

    datasets.Dataset.from_list([{"prompt": "x", "answer": "2"}]).to_parquet(str(tmp_path / "d.parquet"))
    assert load_rows(str(tmp_path / "d.parquet"))[0]["answer"] == "2"
    with pytest.raises(AnemoneError, match="data.train = 'missing.jsonl'"):
        load_rows("missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(AnemoneError, match="line 1"):
        load_rows(str(bad))


def test_preference_rows_plain_and_chat():
    c, r = normalize_preference({"prompt": "2+2?", "chosen": "4", "rejected": "5"})
    assert c[-1] == {"role": "assistant", "content": "4"} and r[0] == {"role": "user", "content": "2+2?"}
    conv = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    c, r = normalize_preference({"chosen": conv, "rejected": conv[:1] + [{"role": "assistant", "content": "b"}]})
    assert c == conv and r[-1]["content"] == "b"
    with pytest.raises(AnemoneError, match="needs `chosen` and `rejected`"):
        normalize_preference({"prompt": "x"})
