import json

import pytest

from anemone_core.errors import AnemoneError, ConfigError
from anemone_evaluator.builtin_data import arithmetic_rows, stdlib_doc_rows
from anemone_evaluator.tasks import builtin_tasks, load_task_yaml, resolve_tasks


def test_builtin_tasks_load_and_build_samples():
    assert set(builtin_tasks()) == {"arith_mc", "arith_gen", "stdlib_docs"}
    mc, gen, ppl = resolve_tasks(["arith_mc", "arith_gen", "stdlib_docs"])
    s = mc.samples()[0]
    assert s.prompt == "Question: What is 66 + 24?\nAnswer:" and s.choices[s.target] == "90"
    assert len(s.choices) == 4 and len(set(s.choices)) == 4
    g = gen.samples(limit=3)
    assert len(g) == 3 and g[0].target == "90"
    assert ppl.samples()[0].target.startswith("The `ast` module")
    assert mc.fingerprint() == resolve_tasks(["arith_mc"])[0].fingerprint()


def test_shipped_data_is_reproducible_from_its_generator():
    tasks = resolve_tasks(["arith_mc", "stdlib_docs"])
    assert tasks[0].docs == json.loads(json.dumps(arithmetic_rows()))
    assert tasks[1].docs == stdlib_doc_rows()


def test_unknown_task_lists_the_available_ones():
    with pytest.raises(AnemoneError, match="unknown task 'mmlu'.*arith_gen, arith_mc, stdlib_docs"):
        resolve_tasks(["mmlu"])


def _write_task(tmp_path, rows, **fields):
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"task": "mine", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": "data.jsonl"}},
            "output_type": "generate_until", "doc_to_text": "Q: {{q}}\nA:", "doc_to_target": "a", **fields}
    path = tmp_path / "mine.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def test_row_missing_its_target_field_is_named(tmp_path):
    path = _write_task(tmp_path, [{"q": "1+1", "a": "2"}, {"q": "2+2"}])
    with pytest.raises(AnemoneError, match="row 1 has no target field 'a'"):
        load_task_yaml(path).samples()


def test_template_missing_field_names_row_and_field(tmp_path):
    path = _write_task(tmp_path, [{"question": "1+1", "a": "2"}])
    with pytest.raises(AnemoneError, match="row 0: doc_to_text.*'q' is undefined"):
        load_task_yaml(path).samples()


def test_lmeval_style_yaml_fields(tmp_path):
    rows = [{"q": f"{i}+1", "opts": ["a", "b", "c"], "gold": "b", "a": str(i + 1)} for i in range(6)]
    path = _write_task(tmp_path, rows, output_type="multiple_choice", doc_to_choice="{{opts}}",
                       doc_to_target="gold", num_fewshot=2, description="Answer.", tag="x", should_decontaminate=True)
    task = load_task_yaml(path)
    assert task.ignored_keys == ["should_decontaminate", "tag"]
    samples = task.samples(seed=7)
    assert samples[0].choices == ["a", "b", "c"] and samples[0].target == 1
    assert samples[0].prompt.startswith("Answer.") and samples[0].prompt.count("Q: ") == 3
    assert "Q: 0+1" not in samples[0].prompt.split("\n\n", 1)[1].rsplit("\n\n", 1)[0]  # no self-shot
    assert [s.prompt for s in task.samples(seed=7)] == [s.prompt for s in samples]  # fixed seed: same prompts
    assert [s.prompt for s in task.samples(seed=8)] != [s.prompt for s in samples]


def test_function_tag_and_bad_fields_refused(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("task: t\nprocess_docs: !function utils.process\n")
    with pytest.raises(AnemoneError, match="!function"):
        load_task_yaml(path)
    path.write_text("task: t\nnum_fewshots: 3\n")
    with pytest.raises(ConfigError, match="num_fewshots.*did you mean 'num_fewshot'"):
        load_task_yaml(path)


def test_parquet_and_datasets_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"q": "1+1", "a": "2"}, {"q": "2+3", "a": "5"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    spec = {"task": "pq", "dataset_path": "parquet", "dataset_kwargs": {"data_files": {"test": "d.parquet"}},
            "doc_to_text": "{{q}}", "doc_to_target": "a"}
    (tmp_path / "pq.yaml").write_text(json.dumps(spec))
    assert [s.target for s in load_task_yaml(tmp_path / "pq.yaml").samples()] == ["2", "5"]

    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "ds"))
    spec = {"task": "ds", "dataset_path": "ds", "doc_to_text": "{{q}}", "doc_to_target": "a"}
    (tmp_path / "ds.yaml").write_text(json.dumps(spec))
    assert [s.target for s in load_task_yaml(tmp_path / "ds.yaml").samples()] == ["2", "5"]
