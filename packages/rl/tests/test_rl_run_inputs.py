"""Bad input to the three trainers: refused with the fix named, before run.out is made or wiped."""

import pytest

from anemone_core.config import load_config
from anemone_rl.dpo_config import DPOConfig
from anemone_rl.dpo_trainer import train as train_dpo
from anemone_rl.sft_config import SFTConfig
from anemone_rl.sft_trainer import train as train_sft


@pytest.mark.parametrize("verb", ["sft", "dpo", "grpo"])
def test_a_malformed_data_file_leaves_no_run_folder(tiny_dir, tmp_path, verb):
    from anemone_core.errors import AnemoneError
    from anemone_rl.grpo_config import GRPOConfig
    from anemone_rl.grpo_trainer import train as train_grpo

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1 + 1", "answer": \n')
    out = tmp_path / "run"
    cls, fn = {"sft": (SFTConfig, train_sft), "dpo": (DPOConfig, train_dpo), "grpo": (GRPOConfig, train_grpo)}[verb]
    cfg = load_config(cls, None, [f"model.path={tiny_dir}", f"run.out={out}", f"data.train={bad}"])
    with pytest.raises(AnemoneError, match="line 1 is not JSON"):
        fn(cfg)
    assert not out.exists()


def test_grpo_refuses_a_reward_that_does_not_import_before_making_the_run_folder(tiny_dir, tmp_path):
    from anemone_core.errors import AnemoneError
    from anemone_rl.grpo_config import GRPOConfig
    from anemone_rl.grpo_trainer import train as train_grpo

    out = tmp_path / "run"
    cfg = load_config(GRPOConfig, None, [f"model.path={tiny_dir}", f"run.out={out}", "env.reward=nosuch_mod:fn"])
    with pytest.raises(AnemoneError, match="env.reward = 'nosuch_mod:fn': cannot import it"):
        train_grpo(cfg)
    assert not out.exists()
