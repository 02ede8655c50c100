"""The `anemone rl` verbs answer --help and refuse bad configs before any work, with exit code 2."""

from pathlib import Path

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


RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_loads(recipe):
    from anemone_core.config import load_config
    from anemone_rl.dpo_config import DPOConfig
    from anemone_rl.grpo_config import GRPOConfig
    from anemone_rl.sft_config import SFTConfig

    cls = {"sft": SFTConfig, "dpo": DPOConfig, "grpo": GRPOConfig}[recipe.name.split("_")[0]]
    cfg = load_config(cls, recipe)
    assert cfg.run.out.startswith("outputs/rl-")  # each recipe writes its own run folder


def test_recipes_exist():
    assert {p.name for p in RECIPES} >= {"dpo_arithmetic.yaml", "sft_arithmetic_warmup.yaml", "grpo_arithmetic.yaml"}
