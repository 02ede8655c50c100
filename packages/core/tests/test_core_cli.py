import argparse
import json
import subprocess
import sys

import pytest

from anemone_core.cli import build_parser, installed_packages, main

PACKAGES = ["core", "bridge", "automodel", "rl", "curator", "evaluator", "export", "speech"]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_help_lists_core_groups_and_every_installed_package():
    out = subprocess.run([sys.executable, "-m", "anemone_core.cli", "--help"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    groups = _subparsers(build_parser())
    for name in ("version", "models", "plan"):
        assert name in out.stdout and name in groups
    assert len(groups) >= 3 + 7  # every sibling package adds a group
    assert "failed to load" not in out.stdout


def test_every_command_answers_help(capsys):
    parser = build_parser()
    paths = []
    for name, group in _subparsers(parser).items():
        paths.append([name])
        paths += [[name, verb] for verb in _subparsers(group)]
    assert ["plan"] in paths and ["models", "path"] in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0, path


def test_version_lists_all_eight_packages(capsys):
    assert main(["version", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert set(found) == {f"anemone-{p}" for p in PACKAGES}
    assert installed_packages() == found


def test_no_arguments_prints_help(capsys):
    assert main([]) == 0
    assert "usage: anemone" in capsys.readouterr().out
