"""What a task asks a target: three request kinds, plain data (hashable, JSON-able, cacheable).

`prompt` is the user text; with `chat` the target wraps it in the model's chat template (local) or sends it
as a chat message (endpoint), with `system` as the system message when set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class LoglikRequest:
    """log p(continuation | prompt): multiple choice."""

    prompt: str
    continuation: str
    chat: bool = False
    system: str | None = None


@dataclass(frozen=True)
class RollingRequest:
    """log p(text), the whole text, conditioned only on the BOS token: perplexity."""

    text: str


@dataclass(frozen=True)
class GenRequest:
    """Greedy continuation of `prompt` until a stop string or `max_tokens`."""

    prompt: str
    until: tuple[str, ...] = ()
    max_tokens: int = 256
    chat: bool = False
    system: str | None = None


Request = LoglikRequest | RollingRequest | GenRequest
KIND = {LoglikRequest: "loglikelihood", RollingRequest: "loglikelihood_rolling", GenRequest: "generate"}


def request_key(req: Request, target_fingerprint: str) -> str:
    """A stable cache key: the request's kind and fields plus the target's fingerprint."""
    body = {"kind": KIND[type(req)], "target": target_fingerprint, **dataclasses.asdict(req)}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def chat_messages(prompt: str, system: str | None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


class Target(Protocol):
    """A model to evaluate: a local HF folder or an OpenAI-compatible endpoint."""

    name: str

    def fingerprint(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...

    def loglikelihood(self, reqs: list[LoglikRequest]) -> list[tuple[float, bool]]:
        """(sum of log-probabilities of the continuation's tokens, whether greedy decoding would produce it)."""
        ...

    def loglikelihood_rolling(self, reqs: list[RollingRequest]) -> list[float]: ...

    def generate(self, reqs: list[GenRequest]) -> list[str]: ...
