"""The demo's own logic; the full run (minutes) is the `slow` test in tests/test_lifecycle_demo.py."""

import pytest

from anemone_core import demo
from anemone_core.cli import main
from anemone_core.errors import AnemoneError


def test_unknown_step_lists_the_valid_ones(tmp_path):
    with pytest.raises(AnemoneError, match="unknown demo step.*curate, sft, grpo, evaluate, convert, export"):
        demo.run_demo(tmp_path, ["curate", "fly"])


def test_find_searches_nested_results():
    data = {"tasks": {"arith": {"exact_match": 0.25, "exact_match_stderr": 0.05}}, "n": [{"kept": 3}]}
    assert demo.find(data, "exact_match") == 0.25
    assert demo.find(data, "kept") == 3
    assert demo.find(data, "absent") is None


def test_every_step_names_an_installed_group():
    groups = demo.installed_groups()
    assert {step.group for step in demo.STEPS} <= groups


def test_demo_answers_help():
    with pytest.raises(SystemExit) as info:
        main(["demo", "--help"])
    assert info.value.code == 0


def test_device_choice_is_checked():
    import torch

    assert demo.resolve_device("cpu") == "cpu"
    assert demo.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(AnemoneError, match="choose auto, cpu or cuda"):
        demo.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(AnemoneError, match="no CUDA GPU here; use --device cpu"):
            demo.resolve_device("cuda")
