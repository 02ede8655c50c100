"""Environments and reward functions: a math verifier, a registry for user code, run with timeouts."""

from anemone_rl.envs.base import Environment, EnvResult, RewardEnv
from anemone_rl.envs.math_env import extract_answer, math_reward
from anemone_rl.envs.registry import build_env, register_env, register_reward, resolve_reward

__all__ = [
    "EnvResult",
    "Environment",
    "RewardEnv",
    "build_env",
    "extract_answer",
    "math_reward",
    "register_env",
    "register_reward",
    "resolve_reward",
]
