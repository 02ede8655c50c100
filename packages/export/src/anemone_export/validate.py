"""Validation of an exported model against its source: fixed prompts, max |logit diff|, greedy agreement.

Every exporter builds a `Report`, prints it as a table and refuses to report success (raises) when a check
fails, so a file that differs from the trained model never leaves the temporary folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from anemone_core.errors import AnemoneError

# Fixed prompts: plain text, code, digits and one chat-templated question (the template is part of the check).
PLAIN_PROMPTS = [
    "The quick brown fox jumps over the lazy dog. The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "12 + 34 = 46. 7 * 8 = 56. 9 + 10 =",
]
CHAT_PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def validation_prompts(tokenizer) -> list[list[int]]:
    """Token ids of the fixed prompts (the chat one through the tokenizer's chat template when it has one)."""
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PLAIN_PROMPTS]
    if getattr(tokenizer, "chat_template", None):
        prompts.append(list(tokenizer.apply_chat_template(CHAT_PROMPT, add_generation_prompt=True, tokenize=True,
                                                          return_dict=False)))
    return [p for p in prompts if p]


@dataclass
class Check:
    name: str
    value: Any
    rule: str
    ok: bool


@dataclass
class Report:
    """The validation table of one export."""

    target: str
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, value: Any, rule: str, ok: bool) -> None:
        self.checks.append(Check(name, value, rule, bool(ok)))

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def rows(self) -> list[list[Any]]:
        return [[c.name, _fmt(c.value), c.rule, "ok" if c.ok else "FAIL"] for c in self.checks]

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "ok": self.ok,
                "checks": [{"name": c.name, "value": c.value, "rule": c.rule, "ok": c.ok} for c in self.checks]}

    def print(self) -> None:
        from anemone_core.cli import print_table

        print_table(f"validation of {self.target}", ["check", "value", "rule", "result"], self.rows())

    def raise_if_failed(self) -> None:
        if not self.ok:
            bad = "; ".join(f"{c.name} = {_fmt(c.value)} (rule: {c.rule})" for c in self.checks if not c.ok)
            raise AnemoneError(
                f"validation of {self.target} failed, nothing was written: {bad}. Loosen the threshold flag named "
                "in the rule if this is expected (e.g. a quantized type), or report it with the command you ran")


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


@torch.no_grad()
def reference_logits(model: torch.nn.Module, prompts: list[list[int]]) -> list[torch.Tensor]:
    """Teacher-forced logits (T, V) of each prompt from the source model, fp32 on CPU."""
    outs = []
    for ids in prompts:
        logits = model(input_ids=torch.tensor([ids])).logits[0]
        outs.append(logits.float().cpu())
    return outs


def compare_logits(report: Report, ref: list[torch.Tensor], got: list[torch.Tensor], *, atol: float,
                   min_agreement: float, label: str = "") -> None:
    """Add max |logit diff| and greedy (argmax) agreement over all prompt positions to `report`."""
    diffs, agree, total = [], 0, 0
    for r, g in zip(ref, got, strict=True):
        g = torch.as_tensor(g).float().reshape(r.shape)
        diffs.append((r - g).abs().max().item())
        agree += int((r.argmax(-1) == g.argmax(-1)).sum())
        total += r.shape[0]
    prefix = f"{label} " if label else ""
    report.add(f"{prefix}max |logit diff|", max(diffs), f"<= {atol:g} (--atol)", max(diffs) <= atol)
    rate = agree / max(total, 1)
    report.add(f"{prefix}greedy agreement", rate, f">= {min_agreement:g} (--min-agreement)", rate >= min_agreement)


def greedy_tokens(step: Callable[[list[int]], torch.Tensor], prompt: list[int], n: int) -> list[int]:
    """n greedy tokens from a function mapping a full sequence to its last-position logits (V,)."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(step(ids).argmax()))
    return ids[len(prompt):]
