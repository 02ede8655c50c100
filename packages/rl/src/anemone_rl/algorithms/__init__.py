"""The numerics of anemone-rl, defined once: logprobs, DPO losses, GRPO advantages, policy loss, KL."""

from anemone_rl.algorithms.dpo import dpo_loss
from anemone_rl.algorithms.grpo import (
    clipped_policy_loss,
    equal_reward_groups,
    group_advantages,
    k3_kl,
)
from anemone_rl.algorithms.logprobs import (
    aggregate,
    entropy_from_logits,
    masked_mean,
    sequence_logprobs,
    shifted_token_logprobs,
    token_logprobs,
)

__all__ = [
    "aggregate",
    "clipped_policy_loss",
    "dpo_loss",
    "entropy_from_logits",
    "equal_reward_groups",
    "group_advantages",
    "k3_kl",
    "masked_mean",
    "sequence_logprobs",
    "shifted_token_logprobs",
    "token_logprobs",
]
