from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from anemone_core.config import AnemoneConfig, add_config_args, describe_fields, load_config, parse_override
from anemone_core.errors import ConfigError


class Optim(AnemoneConfig):
    lr: float = Field(3e-4, gt=0)
    """Peak learning rate."""
    betas: list[float] = [0.9, 0.95]


class Train(AnemoneConfig):
    batch_size: int = Field(8, ge=1)
    """Sequences per step."""
    steps: int = Field(10, ge=1)
    """Optimizer steps."""
    optim: Optim = Optim()
    name: str = "run"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(text)
    return p


def test_recipe_and_overrides_are_typed(tmp_path):
    cfg = load_config(Train, write(tmp_path, "steps: 3\noptim:\n  lr: 1.0e-3\n"),
                      ["batch_size=4", "optim.betas=[0.8, 0.9]", "name=hello"])
    assert (cfg.steps, cfg.batch_size, cfg.optim.lr, cfg.optim.betas, cfg.name) == (3, 4, 1e-3, [0.8, 0.9], "hello")


def test_misspelled_key_names_field_and_suggests_fix(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(Train, write(tmp_path, "batch_sise: 4\n"))
    msg = str(err.value)
    assert "batch_sise" in msg and "did you mean 'batch_size'" in msg and "1 problem" in msg


def test_nested_misspelled_key(tmp_path):
    with pytest.raises(ConfigError, match=r"optim\.lrr = .*did you mean 'lr'"):
        load_config(Train, None, ["optim.lrr=1"])


def test_negative_batch_size_names_value_rule_and_fix(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(Train, write(tmp_path, "batch_size: -4\n"))
    msg = str(err.value)
    assert "batch_size = -4" in msg and "greater than or equal to 1" in msg and "use a value >= 1" in msg


def test_all_problems_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(Train, write(tmp_path, "batch_size: -1\nsteps: 0\noptim:\n  lr: -2\nbogus: 1\n"))
    assert len(err.value.problems) == 4


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Train, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Train, write(tmp_path, "a: [1, 2\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Train, write(tmp_path, "- 1\n- 2\n"))


def test_override_syntax():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("x=true") == (["x"], True)
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("novalue")


def test_field_docs_reach_help():
    lines = describe_fields(Train)
    assert any(line.startswith("batch_size (int, default 8): Sequences per step.") for line in lines)
    assert any(line.startswith("optim.lr") for line in lines)
    import argparse

    parser = argparse.ArgumentParser()
    add_config_args(parser, Train)
    assert "optim.lr" in parser.format_help()


def test_plain_basemodel_also_works():
    class M(BaseModel):
        x: int = 1

    assert load_config(M, None, ["x=5"]).x == 5


def test_cross_field_rule_message_is_shown_plainly():
    from pydantic import model_validator

    class Par(AnemoneConfig):
        tp: int = 1
        world: int = 4

        @model_validator(mode="after")
        def _divides(self):
            if self.world % self.tp:
                raise ValueError(f"tp={self.tp} does not divide world={self.world}: choose tp in {{1,2,4}}")
            return self

    with pytest.raises(ConfigError) as err:
        load_config(Par, None, ["tp=3"])
    assert err.value.problems == ["tp=3 does not divide world=4: choose tp in {1,2,4}"]
