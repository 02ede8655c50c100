import argparse
import json

import pytest

from anemone_core.errors import AnemoneError
from anemone_evaluator.cli import register


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="anemone eval")
    register(parser)
    args = parser.parse_args(argv)
    return args.func(args)


def test_run_writes_results_and_samples(tiny_dir, tmp_path, capsys):
    out = tmp_path / "res"
    rc = run_cli(["run", "--model", str(tiny_dir), "--limit", "6", "--batch-size", "4", "-o", str(out), "--json",
                  "bootstrap=200"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    results = json.loads((out / "results.json").read_text())
    assert printed["tasks"] == results["tasks"]
    assert set(results["tasks"]) == {"arith_mc", "arith_gen", "stdlib_docs"}
    acc = results["tasks"]["arith_mc"]["metrics"]["acc"]
    assert {"value", "stderr", "ci95", "n"} <= set(acc) and acc["n"] == 6
    assert results["tasks"]["arith_mc"]["chat_template"] is False and len(results["tasks"]["arith_mc"]["fingerprint"]) == 16
    assert results["model"]["fingerprint"] and results["config"]["limit"] == 6
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 18 and {"prompt", "scores", "extracted", "task", "doc_id"} <= set(samples[0])
    gen = [s for s in samples if s["task"] == "arith_gen"][0]
    assert "response" in gen and "exact_match" in gen["scores"]

    with pytest.raises(AnemoneError, match="already exists.*--overwrite"):
        run_cli(["run", "--model", str(tiny_dir), "-o", str(out)])


def test_table_output_and_request_log(tiny_dir, tmp_path, capsys):
    out = tmp_path / "res"
    rc = run_cli(["run", "--model", str(tiny_dir), "--tasks", "arith_mc", "--limit", "3", "-o", str(out),
                  "--system-prompt", "You add numbers.", "log_requests=true"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "arith_mc" in text and "stderr" in text and "95% CI" in text
    log = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert len(log) == 12 and log[0]["request"]["prompt"].startswith("You add numbers.\n\nQuestion:")
    assert not list(tmp_path.glob(".*requests*"))  # the temporary log was moved in


def test_bad_input_errors(tiny_dir, tmp_path):
    with pytest.raises(AnemoneError, match="unknown task 'nope': available tasks are arith_gen, arith_mc"):
        run_cli(["run", "--model", str(tiny_dir), "--tasks", "nope", "-o", str(tmp_path / "x")])
    with pytest.raises(AnemoneError, match="model folder .* does not exist"):
        run_cli(["run", "--model", str(tmp_path / "missing"), "--tasks", "arith_mc", "-o", str(tmp_path / "y")])
    with pytest.raises(AnemoneError, match="local.batch_size = 0.*>= 1"):
        run_cli(["run", "--batch-size", "0"])


def test_ls(capsys):
    assert run_cli(["ls", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["task"] for r in rows} == {"arith_mc", "arith_gen", "stdlib_docs"}
    assert all(r["label"] for r in rows)


def _fake_run(folder, scores):
    folder.mkdir()
    metrics = {"acc": {"value": sum(scores) / len(scores), "higher_is_better": True}}
    (folder / "results.json").write_text(json.dumps({"tasks": {"t": {"metrics": metrics, "fingerprint": "f",
                                                                      "chat_template": False}}}))
    (folder / "samples.jsonl").write_text("".join(json.dumps({"task": "t", "doc_id": i, "scores": {"acc": s}}) + "\n"
                                                  for i, s in enumerate(scores)))


def test_compare_flags_a_significant_regression(tmp_path, capsys):
    _fake_run(tmp_path / "a", [1] * 60 + [0] * 40)
    _fake_run(tmp_path / "b", [1] * 45 + [0] * 55)  # 15 questions lost, none gained
    _fake_run(tmp_path / "c", [1] * 59 + [0] * 41)  # one lost: noise
    assert run_cli(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--fail-on-regression"]) == 1
    assert "REGRESSED" in capsys.readouterr().out
    assert run_cli(["compare", str(tmp_path / "a"), str(tmp_path / "c"), "--fail-on-regression", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["regressed"] is False and report["rows"][0]["test"] == "mcnemar"
    with pytest.raises(AnemoneError, match="not an evaluation results folder"):
        run_cli(["compare", str(tmp_path), str(tmp_path / "a")])
