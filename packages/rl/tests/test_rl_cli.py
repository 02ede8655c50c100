"""The `anemone rl` verbs answer --help and refuse bad configs before any work, with exit code 2."""

import pytest

from anemone_core.cli import main


@pytest.mark.parametrize("verb", ["sft", "dpo", "grpo"])
def test_verbs_answer_help(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["rl", verb, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "config fields:" in out and "run.out" in out


def test_bad_config_exits_2_with_named_field(capsys):
    assert main(["rl", "grpo", "grpo.generations_per_prompt=1"]) == 2
    err = capsys.readouterr().err
    assert "grpo.generations_per_prompt = 1" in err and "at least 2" in err
    assert main(["rl", "dpo", "dpo.micro_batch_size=3"]) == 2
    assert "micro_batch_size = 3" in capsys.readouterr().err
