"""The environment interface and the reward-function environment.

An environment scores a batch of responses. Single-turn tasks return `done=True`; the `observation` field is
where a multi-turn environment would return the next user/tool message (the GRPO loop today runs one turn;
the interface leaves room for `step` to be called again with the extended conversation).

A reward function is `fn(sample: dict, response: str) -> float`. It runs in a worker thread with a timeout:
an exception or a timeout gives reward 0 and is counted in the metrics, never a crash or a hang (a function
that never returns leaves its thread behind, so the count is the signal to fix it).
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

RewardFn = Callable[[dict[str, Any], str], float]


@dataclass
class EnvResult:
    reward: float
    done: bool = True
    observation: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Environment(Protocol):
    def step(self, samples: list[dict[str, Any]], responses: list[str]) -> list[EnvResult]:
        """Score one response per sample; the result may carry the next observation (multi-turn)."""
        ...


class RewardEnv:
    """Single-turn environment around a reward function, with per-call timeout and error counting."""

    def __init__(self, reward_fn: RewardFn, timeout_s: float = 5.0, max_workers: int = 4) -> None:
        self.reward_fn = reward_fn
        self.timeout_s = timeout_s
        self.pool = cf.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="reward")
        self.counts = {"errors": 0, "timeouts": 0}

    def step(self, samples: list[dict[str, Any]], responses: list[str]) -> list[EnvResult]:
        futures = [self.pool.submit(self.reward_fn, s, r) for s, r in zip(samples, responses, strict=True)]
        results = []
        for fut in futures:
            try:
                reward = float(fut.result(timeout=self.timeout_s))
                results.append(EnvResult(reward))
            except cf.TimeoutError:
                self.counts["timeouts"] += 1
                results.append(EnvResult(0.0, info={"error": f"timeout after {self.timeout_s}s"}))
            except Exception as exc:  # a user's reward function: any failure scores 0 and is counted
                self.counts["errors"] += 1
                results.append(EnvResult(0.0, info={"error": f"{type(exc).__name__}: {exc}"}))
        return results

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
