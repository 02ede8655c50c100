"""The `anemone bridge` verbs answer --help, `list --json` prints every architecture, errors exit 2."""

from __future__ import annotations

import json

import pytest

from anemone_core.cli import main


@pytest.mark.parametrize("verb", ["list", "import", "export", "roundtrip", "verify"])
def test_every_verb_answers_help(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bridge", verb, "--help"])
    assert exc.value.code == 0
    assert "--json" in capsys.readouterr().out


def test_list_json(capsys):
    assert main(["bridge", "list", "--json"]) == 0
    names = {row["name"] for row in json.loads(capsys.readouterr().out)}
    assert names == {"llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen3_moe"}


def test_bad_tp_exits_2_with_the_rule(tiny_folders, capsys):
    assert main(["bridge", "verify", "--model", str(tiny_folders["llama"]), "--tp", "3", "--json"]) == 2
    assert "choose tp in {1,2}" in capsys.readouterr().err


def test_verify_json_on_a_tiny_model(tiny_folders, capsys):
    assert main(["bridge", "verify", "--model", str(tiny_folders["qwen3"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["roundtrip"]["exact"] and report["argmax_agreement"] == 1.0


def test_export_without_import_explains(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bridge", "export"]) == 2
    assert "run `anemone bridge import` first" in capsys.readouterr().err
