"""Task definitions: lm-evaluation-harness-style YAML over local data, turned into scored samples.

A task names its data (`dataset_path`, `dataset_kwargs.data_files`, `test_split`), how a document becomes
text (`doc_to_text`), its gold answer (`doc_to_target`), its options (`doc_to_choice`, multiple choice), its
output type, filters and metrics. `doc_to_*` are a field name, a Jinja template (rendered like lm-eval:
StrictUndefined, trailing newline kept), a literal int or list. lm-eval keys we do not use are accepted and
listed in `Task.ignored_keys`; `!function` (arbitrary Python) is refused.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from anemone_core.config import AnemoneConfig, validate
from anemone_core.errors import AnemoneError
from anemone_evaluator.data import load_split

BUILTIN_DIR = Path(__file__).parent / "builtin"
OutputType = Literal["multiple_choice", "generate_until", "loglikelihood_rolling"]
# lm-eval keys that do not change a score here (grouping, caching, decontamination): accepted, reported, unused.
LMEVAL_IGNORED = {"tag", "group", "group_alias", "task_alias", "dataset_name", "should_decontaminate",
                  "doc_to_decontamination_query", "unsafe_code", "fewshot_config", "process_results", "repeats",
                  "doc_to_image", "doc_to_audio", "gen_prefix", "use_prompt", "custom_dataset", "output_path"}


class MetricSpec(AnemoneConfig):
    metric: str
    """acc, acc_norm (multiple choice); exact_match, numeric_match (generation);
    word_perplexity, byte_perplexity, bits_per_byte (rolling loglikelihood)."""
    aggregation: str | None = None
    """Accepted for lm-eval compatibility; aggregation follows the metric."""
    higher_is_better: bool | None = None
    """Accepted for lm-eval compatibility; the direction follows the metric."""
    ignore_case: bool = False
    """exact_match: compare case-insensitively."""
    ignore_punctuation: bool = False
    """exact_match: drop punctuation before comparing."""


class FilterStep(AnemoneConfig):
    function: str
    """regex, take_first, lowercase, uppercase, strip, remove_whitespace, last_number, boxed, strip_think."""
    regex_pattern: str | None = None
    group_select: int = 0
    fallback: str = "[invalid]"


class FilterPipeline(AnemoneConfig):
    name: str
    filter: list[FilterStep]


class TaskConfig(AnemoneConfig):
    """One task, in the lm-evaluation-harness YAML schema's common fields."""

    task: str
    """The task's name."""
    output_type: OutputType = "generate_until"
    dataset_path: str = "json"
    """'json', 'parquet', 'csv' or 'arrow' with data_files, or a local file/folder (datasets.save_to_disk)."""
    dataset_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Only `data_files` is read: a mapping split -> file(s), relative to the YAML's folder or the cwd."""
    test_split: str = "test"
    training_split: str | None = None
    validation_split: str | None = None
    fewshot_split: str | None = None
    """Where few-shot examples come from (default: training, then validation, then the test split itself)."""
    doc_to_text: str | int | list[Any] = ""
    doc_to_target: str | int | list[Any] = ""
    doc_to_choice: str | list[Any] | None = None
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    num_fewshot: int = Field(0, ge=0)
    generation_kwargs: dict[str, Any] = Field(default_factory=dict)
    """`until` (stop strings), `max_gen_toks` (default 256), `do_sample`/`temperature` (greedy only)."""
    filter_list: list[FilterPipeline] = Field(default_factory=list)
    metric_list: list[MetricSpec] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


DEFAULT_METRICS: dict[str, list[str]] = {
    "multiple_choice": ["acc", "acc_norm"],
    "generate_until": ["exact_match"],
    "loglikelihood_rolling": ["word_perplexity", "byte_perplexity", "bits_per_byte"],
}


@dataclass
class Sample:
    """One document turned into what a target is asked: the prompt text, the gold answer, the choices."""

    doc_id: int
    doc: dict[str, Any]
    prompt: str  # the user text (few-shot examples + question), before any chat template
    target: Any  # multiple choice: gold index; generation: gold string; rolling: the text scored
    choices: list[str] = field(default_factory=list)


class _Loader(yaml.SafeLoader):
    pass


def _refuse_function(loader: yaml.Loader, node: yaml.Node) -> Any:
    raise AnemoneError(f"task YAML uses '!function {getattr(node, 'value', '')}' (arbitrary Python), which anemone "
                       "does not execute: replace it with a field name or a Jinja template")


_Loader.add_constructor("!function", _refuse_function)


def _render(template: str, doc: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["regex_replace"] = lambda s, pattern, repl, count=0: re.sub(pattern, repl, s, count=count)
    return env.from_string(template).render(**doc)


class Task:
    """A loaded task: its config, its documents, and the samples built from them."""

    def __init__(self, config: TaskConfig, base: Path | None = None, ignored_keys: list[str] | None = None,
                 source: str = "") -> None:
        self.config, self.base, self.source = config, base, source
        self.ignored_keys = ignored_keys or []
        self.name = config.task
        self.output_type = config.output_type
        self.metrics = [m.metric for m in config.metric_list] or DEFAULT_METRICS[config.output_type]
        self._docs: list[dict[str, Any]] | None = None

    # -- data -------------------------------------------------------------------------------------------------
    def _split(self, split: str) -> list[dict[str, Any]]:
        files = self.config.dataset_kwargs.get("data_files")
        return load_split(self.config.dataset_path, files, split, self.base)

    @property
    def docs(self) -> list[dict[str, Any]]:
        if self._docs is None:
            self._docs = self._split(self.config.test_split)
        return self._docs

    def fingerprint(self) -> str:
        """sha256 over the resolved config and every document: equal fingerprints, equal questions."""
        h = hashlib.sha256(json.dumps(self.config.model_dump(), sort_keys=True, default=str).encode())
        for doc in self.docs:
            h.update(json.dumps(doc, sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]

    # -- doc_to_* (lm-eval semantics) -------------------------------------------------------------------------
    def _apply(self, spec: str | int | list[Any], doc: dict[str, Any], row: int, what: str) -> Any:
        if isinstance(spec, int | list):
            return spec
        if spec in doc:
            return doc[spec]
        import jinja2

        try:
            return _render(spec, doc)
        except jinja2.UndefinedError as exc:
            raise AnemoneError(f"task '{self.name}' row {row}: {what} = {spec!r} needs a field the row lacks "
                               f"({exc.message}); row fields: {sorted(doc)}: fix the row or the task's {what}") from None

    def doc_to_text(self, doc: dict[str, Any], row: int) -> str:
        return str(self._apply(self.config.doc_to_text, doc, row, "doc_to_text"))

    def doc_to_choice(self, doc: dict[str, Any], row: int) -> list[str]:
        spec = self.config.doc_to_choice
        if spec is None:
            raise AnemoneError(f"task '{self.name}' is multiple_choice but has no doc_to_choice: set it to a field "
                               "holding the list of options")
        value = self._apply(spec, doc, row, "doc_to_choice")
        if isinstance(value, str):
            try:
                value = ast.literal_eval(value)
            except (SyntaxError, ValueError):
                raise AnemoneError(f"task '{self.name}' row {row}: doc_to_choice gave {value!r}, not a list: "
                                   "make it a field or template that yields a list of strings") from None
        return [str(c) for c in value]

    def doc_to_target(self, doc: dict[str, Any], row: int) -> Any:
        spec = self.config.doc_to_target
        if isinstance(spec, str) and spec and spec not in doc and "{{" not in spec:
            raise AnemoneError(f"task '{self.name}' row {row} has no target field '{spec}' (row fields: "
                               f"{sorted(doc)}): add it to the row or fix doc_to_target")
        value = self._apply(spec, doc, row, "doc_to_target")
        if isinstance(value, str):
            if value.isdigit() and self.config.doc_to_choice is not None:
                return int(value)
            if len(value) >= 2 and value[0] == "[" and value[-1] == "]":
                try:
                    return ast.literal_eval(value)
                except (SyntaxError, ValueError):
                    return value
        return value

    def _gold_index(self, target: Any, choices: list[str], row: int) -> int:
        gold = choices.index(target) if isinstance(target, str) and target in choices else target
        if not isinstance(gold, int) or not 0 <= gold < len(choices):
            raise AnemoneError(f"task '{self.name}' row {row}: target {target!r} is not an index into its "
                               f"{len(choices)} choices nor one of them: fix the row's target")
        return gold

    def _target_text(self, doc: dict[str, Any], row: int) -> str:
        target = self.doc_to_target(doc, row)
        if self.output_type == "multiple_choice":
            choices = self.doc_to_choice(doc, row)
            return choices[self._gold_index(target, choices, row)]
        return str(target[0] if isinstance(target, list) else target)

    # -- samples ----------------------------------------------------------------------------------------------
    def _fewshot_pool(self) -> tuple[list[dict[str, Any]], bool]:
        c = self.config
        for split in (c.fewshot_split, c.training_split, c.validation_split):
            if split:
                return self._split(split), False
        return self.docs, True

    def samples(self, num_fewshot: int | None = None, seed: int = 1234, limit: int | None = None) -> list[Sample]:
        """Every document as a Sample; few-shot examples drawn per document from a fixed seed."""
        k = self.config.num_fewshot if num_fewshot is None else num_fewshot
        pool, same_split = self._fewshot_pool() if k else ([], False)
        if k and len(pool) - int(same_split) < k:
            raise AnemoneError(f"task '{self.name}': num_fewshot={k} but only {len(pool)} few-shot documents exist: "
                               "lower --num-fewshot or add a fewshot_split")
        out = []
        docs = self.docs if limit is None else self.docs[:limit]
        for i, doc in enumerate(docs):
            text = self.doc_to_text(doc, i)
            if self.output_type == "loglikelihood_rolling":
                out.append(Sample(i, doc, text, str(self.doc_to_target(doc, i))))
                continue
            shots = ""
            if k:
                rng = random.Random(seed * 1_000_003 + i)
                idx = [j for j in rng.sample(range(len(pool)), min(len(pool), k + 1)) if not (same_split and j == i)]
                shots = "".join(self.doc_to_text(pool[j], j) + self.config.target_delimiter
                                + self._target_text(pool[j], j) + self.config.fewshot_delimiter for j in idx[:k])
            desc = self.config.description
            prompt = (desc + self.config.fewshot_delimiter if desc and not k else desc) + shots + text
            target = self.doc_to_target(doc, i)
            if self.output_type == "multiple_choice":
                choices = self.doc_to_choice(doc, i)
                out.append(Sample(i, doc, prompt, self._gold_index(target, choices, i), choices))
            else:
                if target in ("", None) or target == []:
                    raise AnemoneError(f"task '{self.name}' row {i} has an empty target (doc_to_target="
                                       f"{self.config.doc_to_target!r}): fill the row's target field")
                out.append(Sample(i, doc, prompt, target))
        return out


def load_task_yaml(path: str | Path) -> Task:
    """A task YAML file (lm-eval schema, common fields; `include:` of a base file is followed)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise AnemoneError(f"task file '{p}' not found: check the path")
    data = yaml.load(p.read_text(encoding="utf-8"), Loader=_Loader) or {}
    if "include" in data:
        base = yaml.load((p.parent / data.pop("include")).read_text(encoding="utf-8"), Loader=_Loader) or {}
        data = {**base, **data}
    ignored = sorted(k for k in data if k in LMEVAL_IGNORED)
    for k in ignored:
        data.pop(k)
    if "task" not in data:
        data["task"] = p.stem
    config = validate(TaskConfig, data, source=str(p))
    return Task(config, base=p.parent, ignored_keys=ignored, source=str(p))


def builtin_tasks() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


def resolve_tasks(names: list[str], task_dirs: list[str] | None = None) -> list[Task]:
    """Task names (built-in or from `task_dirs`) or YAML paths, each loaded; unknown names list what exists."""
    available = dict(builtin_tasks())
    for d in task_dirs or []:
        folder = Path(d).expanduser()
        if not folder.is_dir():
            raise AnemoneError(f"--task-dir '{folder}' is not a folder: give a folder of task YAML files")
        for f in sorted(folder.glob("*.yaml")):
            available[load_task_yaml(f).name] = f
    tasks = []
    for name in names:
        if name.endswith((".yaml", ".yml")):
            tasks.append(load_task_yaml(name))
        elif name in available:
            tasks.append(load_task_yaml(available[name]))
        else:
            raise AnemoneError(f"unknown task '{name}': available tasks are {', '.join(sorted(available))} "
                               "(or give a task YAML path; `anemone eval ls` describes them)")
    return tasks
