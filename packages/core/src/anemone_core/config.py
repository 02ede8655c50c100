"""Typed configs: pydantic models loaded from YAML recipes plus `a.b=c` overrides, checked before work starts.

Recipes hold only what differs from the defaults. Every problem is reported at once, each naming the
field, the value, the rule and the fix; unknown keys are errors (with the nearest valid name suggested).
"""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from anemone_core.errors import ConfigError

C = TypeVar("C", bound=BaseModel)


class AnemoneConfig(BaseModel):
    """Base for every component config: unknown keys are errors, field docstrings are the documentation."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (["a", "b"], parsed c). Values are YAML scalars: `3`, `1e-4`, `true`, `[1, 2]`, `null`."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError([f"override {text!r} is not of the form key.sub=value: write e.g. `train.lr=3e-4`"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not YAML: keep the literal string
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else child
                if not isinstance(child, dict):
                    raise ConfigError([f"override {text!r}: '{part}' holds {child!r}, not a section"])
                node[part] = child
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError([f"config file '{p}' not found (working directory {Path.cwd()}): check the path"])
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError([f"'{p}' is not valid YAML: {exc}"], source=str(p)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"'{p}' is not UTF-8 text: {exc}"], source=str(p)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"'{p}' must hold a mapping of fields at the top level, got {type(data).__name__}"])
    return data


def _field_names(model_cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The valid field names at `loc`'s parent, to suggest a fix for an unknown key."""
    cls: Any = model_cls
    for part in loc[:-1]:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        cls = field.annotation
    return list(getattr(cls, "model_fields", {}).keys())


def _fix(err: Any, model_cls: type[BaseModel]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        names = _field_names(model_cls, err["loc"])
        close = difflib.get_close_matches(str(err["loc"][-1]), names, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"{hint}valid keys here: {', '.join(names)}" if names else "remove it"
    if kind == "missing":
        return "set it in the recipe or as an override"
    if "ge" in ctx:
        return f"use a value >= {ctx['ge']}"
    if "gt" in ctx:
        return f"use a value > {ctx['gt']}"
    if "le" in ctx:
        return f"use a value <= {ctx['le']}"
    if "lt" in ctx:
        return f"use a value < {ctx['lt']}"
    if "expected" in ctx:
        return f"use one of {ctx['expected']}"
    return "correct the value"


def format_validation_error(exc: ValidationError, model_cls: type[BaseModel]) -> list[str]:
    problems = []
    for err in exc.errors():
        if not err["loc"]:  # a cross-field rule (model validator): its message already names the fields
            problems.append(str(err["msg"]).removeprefix("Value error, "))
            continue
        field = ".".join(str(p) for p in err["loc"])
        value = err.get("input")
        shown = "(absent)" if err["type"] == "missing" else repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        problems.append(f"{field} = {shown}: {err['msg']}; fix: {_fix(err, model_cls)}")
    return problems


def validate(model_cls: type[C], data: dict[str, Any], source: str | None = None) -> C:
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model_cls), source=source) from None


def load_config(model_cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Defaults <- YAML recipe at `path` (deltas only) <- `overrides`; validated before any work starts."""
    data = read_yaml(path) if path else {}
    apply_overrides(data, list(overrides or []))
    return validate(model_cls, data, source=str(path) if path else None)


def describe_fields(model_cls: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per leaf field, `a.b (type, default): doc`, for `--help`."""
    lines = []
    for name, field in model_cls.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            lines += describe_fields(ann, f"{prefix}{name}.")
            continue
        tname = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        doc = (field.description or "").strip().splitlines()[0] if field.description else ""
        lines.append(f"{prefix}{name} ({tname}, default {default}): {doc}")
    return lines


def add_config_args(parser: argparse.ArgumentParser, model_cls: type[BaseModel]) -> None:
    """`-c recipe.yaml` plus positional `key.sub=value` overrides; the fields are listed in `--help`."""
    parser.add_argument("-c", "--config", help="YAML recipe holding only what differs from the defaults")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override any field")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "config fields:\n" + "\n".join(f"  {line}" for line in describe_fields(model_cls))


def config_from_args(model_cls: type[C], args: argparse.Namespace) -> C:
    return load_config(model_cls, getattr(args, "config", None), getattr(args, "overrides", None))
