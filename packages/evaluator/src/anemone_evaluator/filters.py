"""Answer extraction: a table of named filters applied in order to a generated response.

`regex`, `take_first`, `lowercase`, `uppercase`, `strip`, `remove_whitespace` behave as lm-evaluation-harness's
filters of the same name (regex: `findall`, pick `group_select`, first non-empty group of a tuple, strip, or
`fallback`); `last_number`, `boxed` and `strip_think` are ours.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from anemone_core.errors import AnemoneError
from anemone_evaluator.tasks import FilterStep

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def strip_think(text: str) -> str:
    """Remove `<think>...</think>` blocks; an unclosed `<think>` drops everything after it."""
    text = _THINK.sub("", text)
    if "</think>" in text:  # the opening tag was in the prompt (some chat templates add it)
        text = text.split("</think>")[-1]
    return text.split("<think>")[0].strip()


def last_boxed(text: str) -> str | None:
    r"""The content of the last `\boxed{...}`, braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def _regex(step: FilterStep) -> Callable[[str], str]:
    if not step.regex_pattern:
        raise AnemoneError("filter 'regex' needs regex_pattern: add `regex_pattern: ...` to the filter step")
    pattern = re.compile(step.regex_pattern)

    def apply(text: str) -> str:
        found = pattern.findall(text)
        if not found:
            return step.fallback
        match = found[step.group_select]
        if isinstance(match, tuple):
            match = next((m for m in match if m), step.fallback)
        return match.strip()

    return apply


def _last_number(step: FilterStep) -> Callable[[str], str]:
    def apply(text: str) -> str:
        found = _NUMBER.findall(text)
        return found[-1].replace(",", "") if found else step.fallback

    return apply


def _boxed(step: FilterStep) -> Callable[[str], str]:
    return lambda text: (last_boxed(text) or step.fallback)


FILTERS: dict[str, Callable[[FilterStep], Callable[[str], str]]] = {
    "regex": _regex,
    "take_first": lambda s: lambda t: t,  # one response per sample: nothing to choose
    "lowercase": lambda s: str.lower,
    "uppercase": lambda s: str.upper,
    "strip": lambda s: str.strip,
    "remove_whitespace": lambda s: lambda t: t.lstrip(" "),  # lm-eval's WhitespaceFilter drops leading spaces
    "last_number": _last_number,
    "boxed": _boxed,
    "strip_think": lambda s: strip_think,
}


def build_filter(steps: list[FilterStep]) -> Callable[[str], str]:
    fns = []
    for step in steps:
        if step.function not in FILTERS:
            raise AnemoneError(f"unknown filter function '{step.function}': use one of {', '.join(FILTERS)}")
        fns.append(FILTERS[step.function](step))

    def apply(text: str) -> str:
        for fn in fns:
            text = fn(text)
        return text

    return apply
