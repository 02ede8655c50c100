"""Named environments and reward functions, plus `module:function` paths for user code."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from anemone_core.errors import AnemoneError
from anemone_rl.envs.base import RewardEnv, RewardFn
from anemone_rl.envs.math_env import math_reward
from anemone_rl.envs.toy import digits_reward

_REWARDS: dict[str, RewardFn] = {"math": math_reward, "toy_digits": digits_reward}
_ENVS: dict[str, Callable[..., Any]] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: `@register_reward("my_task") def reward(sample, response) -> float`."""

    def deco(fn: RewardFn) -> RewardFn:
        _REWARDS[name] = fn
        return fn

    return deco


def register_env(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator for an environment factory `(**kwargs) -> Environment` (e.g. a multi-turn one)."""

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        _ENVS[name] = factory
        return factory

    return deco


def resolve_reward(name: str) -> RewardFn:
    """A registered name (`math`) or an importable `package.module:function`."""
    if name in _REWARDS:
        return _REWARDS[name]
    if ":" in name:
        mod, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as exc:
            raise AnemoneError(f"env.reward = {name!r}: cannot import it ({exc}); give an importable "
                               f"module:function or one of {sorted(_REWARDS)}") from None
        return fn
    raise AnemoneError(f"env.reward = {name!r} is not a registered reward: use one of {sorted(_REWARDS)} "
                       f"or a `module:function` path")


def build_env(reward: str = "math", timeout_s: float = 5.0, name: str | None = None, **kwargs: Any):
    """An environment by registered name, else a `RewardEnv` around the named reward function."""
    if name is not None:
        if name not in _ENVS:
            raise AnemoneError(f"env.name = {name!r} is not registered: use one of {sorted(_ENVS)} or leave it unset")
        return _ENVS[name](**kwargs)
    return RewardEnv(resolve_reward(reward), timeout_s=timeout_s)
