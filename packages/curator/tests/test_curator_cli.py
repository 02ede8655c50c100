"""The `anemone curator` verbs: --help, run on a recipe with --json, dedup, stats, errors."""

from __future__ import annotations

import argparse
import json

import pytest

from anemone_core.errors import AnemoneError
from anemone_curator.cli import register
from anemone_curator.corpus import build_sample_corpus


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="anemone curator")
    register(p)
    return p


def call(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize("verb", ["run", "dedup", "stats", "sample"])
def test_help(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        parser().parse_args([verb, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--json" in out
    if verb == "run":
        assert "stages" in out and "executor.workers" in out  # the config fields are listed


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return build_sample_corpus(tmp_path_factory.mktemp("c") / "sample", limit=25)


def test_run_recipe_with_overrides_json(small, tmp_path, capsys):
    recipe = tmp_path / "p.yaml"
    recipe.write_text("stages:\n  - {stage: pii}\n  - {stage: exact_dedup}\n")
    out = tmp_path / "out"
    assert (
        call(["run", str(recipe), f"input=[{small}]", f"output={out}", "executor.workers=1", "--json"]) == 0
    )
    summary = json.loads(capsys.readouterr().out)
    t = summary["totals"]
    assert t["input"] == 100 and t["unaccounted"] == 0 and t["rejected"] == 5
    assert (out / "stats.json").is_file() and (out / "pipeline.yaml").is_file()
    assert call(["stats", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"] == t


def test_run_prints_the_table(small, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        call(
            [
                "run",
                f"input=[{small}]",
                f"output={out}",
                "executor.workers=1",
                "stages=[{stage: gopher_quality}]",
                "--no-progress",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "documents per stage" in text and "00_gopher_quality" in text and "input 100 = kept" in text


def test_dedup_and_stats(small, tmp_path, capsys):
    out = tmp_path / "d"
    assert call(["dedup", str(small), "--output", str(out), "--workers", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in summary["stages"]] == ["read", "00_exact_dedup", "01_fuzzy_dedup"]
    assert call(["stats", str(small), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sum(r["documents"] for r in rows) == 95 and sum(r["invalid_records"] for r in rows) == 5


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(AnemoneError, match="neither a key=value override nor a .yaml recipe"):
        call(["run", "pipeline.txt"])
    with pytest.raises(AnemoneError, match="executor.workers"):
        call(["run", "executor.workers=-1"])
    with pytest.raises(AnemoneError, match="bands"):
        call(["dedup", "--bands", "0"])
