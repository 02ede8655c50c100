"""Start (or join) Ray and the GRPO worker group; the one place that knows colocated vs separate mode."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anemone_core.errors import AnemoneError, require
from anemone_core.io import atomic_dir
from anemone_core.launch import free_port  # also imported from here by spawn_group and tests
from anemone_rl.grpo_config import GRPOConfig
from anemone_rl.policy import split_for_workers


@dataclass
class Workers:
    """The worker group. With Ray the members are actor handles; with `ray.enabled=false` they are the same
    classes in this process (for debugging and quick experiments). `call` hides the difference.

    `policy` is rank 0 of the policy group `policies` (one member unless `grpo.policy_workers` > 1). Methods
    that touch the policy's weights go to every member at once (FSDP2 collectives); their answer is rank 0's.
    """

    policy: Any
    generator: Any  # the policy (rank 0) itself in colocated mode
    reference: Any | None
    env: Any
    colocated: bool
    use_ray: bool = True
    policies: list[Any] = field(default_factory=list)
    mini_batches: int = 1
    placement: Any | None = None  # the Ray placement group packing a policy group onto one node

    def __post_init__(self) -> None:
        if not self.policies:
            self.policies = [self.policy]

    def call(self, actor: Any, method: str, *args: Any) -> Any:
        if not self.use_ray:
            return getattr(actor, method)(*args)
        import ray

        return ray.get(getattr(actor, method).remote(*args))

    def call_policies(self, method: str, per_rank: list[tuple] | None = None) -> list[Any]:
        """`method` on every policy worker at once (rank r gets `per_rank[r]` as arguments); their answers."""
        per_rank = per_rank or [()] * len(self.policies)
        if not self.use_ray:
            return [getattr(a, method)(*args) for a, args in zip(self.policies, per_rank, strict=True)]
        import ray

        return ray.get([getattr(a, method).remote(*args) for a, args in zip(self.policies, per_rank, strict=True)])

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One update on the whole batch, each policy worker taking 1/N of every mini-batch; the group's metrics."""
        shares = split_for_workers(batch, len(self.policies), self.mini_batches)
        return self.call_policies("train_step", [(s,) for s in shares])[0]

    def policy_logprobs(self, batch: dict[str, Any]) -> Any:
        """The policy's logprobs of the whole batch, each worker scoring a contiguous 1/N of the rows."""
        import torch

        shares = split_for_workers(batch, len(self.policies))
        return torch.cat(self.call_policies("logprobs", [(s,) for s in shares]))

    def refit(self) -> float:
        """Push the policy's new weights to the generator; returns wall seconds (measured in both modes).
        With several policy workers the full weights are first gathered to rank 0 (a collective)."""
        t0 = time.perf_counter()
        if self.colocated:
            self.call_policies("refit_generator")
        elif self.use_ray:
            import ray

            refs = [a.state_dict.remote() for a in self.policies]  # rank 0 returns the gathered weights
            ray.get([self.generator.load_weights.remote(refs[0]), *refs[1:]])
        else:
            self.generator.load_weights(self.policy.state_dict())
        return time.perf_counter() - t0

    def save(self, folder: Path) -> None:
        self.call_policies("save", [(str(folder),)] * len(self.policies))

    def save_model(self, out: Path) -> None:
        with atomic_dir(out, overwrite=True) as tmp:
            self.call_policies("save_hf", [(str(tmp),)] * len(self.policies))

    def load_optimizer(self, folder: Path) -> None:
        self.call_policies("load_optimizer", [(str(folder),)] * len(self.policies))

    def shutdown(self) -> None:
        if not self.use_ray:
            return
        import ray

        members = (*self.policies, self.generator, self.reference, self.env)
        for actor in {id(a): a for a in members if a}.values():
            ray.kill(actor)
        if self.placement is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.placement)


def init_ray(address: str | None, num_cpus: int | None, attempts: int = 3) -> None:
    """Join `address`, or start a local instance. Ray 2.60's raylet gives its dashboard agent a hard-coded
    15 s to start (ray-project/ray#65983); on an overloaded machine that fails, so a local start is retried."""
    # Under `uv run`, Ray 2.60 by default starts every worker through `uv run` in a copy of the working
    # directory (so relative paths move and uv may re-sync); the workers already share our interpreter.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray = require("ray", "uv pip install 'ray[default]'", "GRPO's workers")
    import ray._private.ray_constants as ray_constants

    ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] not in ("0", "false")
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, ignore_reinit_error=True)
        return
    for attempt in range(1, attempts + 1):
        try:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, ignore_reinit_error=True,
                     log_to_driver=False)
            return
        except Exception as exc:  # Ray raises a bare Exception for a node start-up timeout
            if "timed out during startup" not in str(exc):
                raise
            ray.shutdown()
            if attempt == attempts:
                raise AnemoneError(
                    f"ray.address unset: a local Ray instance failed to start {attempts} times (its raylet timed "
                    "out waiting for the dashboard agent, which happens on an overloaded machine, "
                    "ray-project/ray#65983): retry when the load is lower, or start one with `ray start --head` "
                    "and pass ray.address=auto") from None
            time.sleep(2.0 * attempt)


def start_workers(cfg: GRPOConfig, resume_from: Path | None = None) -> Workers:
    """Policy (+ colocated generator), optional separate generator, reference (if kl_beta > 0), environment."""
    from anemone_rl.workers import EnvWorker, GeneratorWorker, PolicyWorker, ReferenceWorker

    base = cfg.model.path
    if base and Path(base).expanduser().exists():  # workers may not share our working directory
        base = str(Path(base).expanduser().absolute())
    start_path = str(resume_from / "model") if resume_from is not None else base
    threads, dev, dtype = cfg.run.threads, cfg.ray.device, cfg.model.dtype
    policy_args = (start_path, dtype, cfg.optim.model_dump(), cfg.grpo.model_dump(), cfg.grpo.steps, cfg.run.seed,
                   threads, dev, cfg.ray.colocated)
    gen_args = (start_path, dtype, cfg.ray.generator, threads, dev, cfg.run.seed, cfg.grpo.gen_matmul_dtype)
    # The reference is always the run's starting model, also after a resume.
    ref_args = (base, dtype, cfg.grpo.micro_batch_size, cfg.grpo.temperature, threads, dev,
                cfg.grpo.share_prompt_forward)
    env_args = (cfg.env.reward, cfg.env.timeout_s)
    n_policy = cfg.grpo.policy_workers
    use_ray = cfg.ray.enabled is not False
    if use_ray and cfg.ray.enabled == "auto" and not cfg.ray.address:
        try:
            init_ray(None, cfg.ray.num_cpus)
        except AnemoneError as exc:
            if n_policy > 1:  # the group needs one process per worker: no in-process fallback
                raise AnemoneError(f"{exc}\ngrpo.policy_workers = {n_policy} runs one Ray actor per worker and "
                                   "cannot fall back to in-process workers: retry when Ray starts, or set "
                                   "grpo.policy_workers=1") from None
            import sys

            print(f"warning: {exc}\nwarning: ray.enabled=auto: running the GRPO workers in this process instead "
                  "(set ray.enabled=true to make this an error)", file=sys.stderr)
            use_ray = False
    if not use_ray:
        policy = PolicyWorker(*policy_args)
        w = Workers(policy, policy if cfg.ray.colocated else GeneratorWorker(*gen_args),
                    ReferenceWorker(*ref_args) if cfg.grpo.kl_beta > 0 else None, EnvWorker(*env_args),
                    cfg.ray.colocated, use_ray=False, mini_batches=cfg.grpo.mini_batches)
    else:
        import ray

        init_ray(cfg.ray.address, cfg.ray.num_cpus)
        gpu = 1 if cfg.ray.device == "cuda" else 0
        n_model = n_policy + (not cfg.ray.colocated) + (cfg.grpo.kl_beta > 0)
        # The workers mostly run one after another, so they share the CPUs instead of each reserving one
        # (which would leave actors pending forever on a 2-CPU machine).
        cpus = min(1.0, ray.available_resources().get("CPU", 1.0) / (n_model + 1))
        opts = {"num_cpus": cpus, "num_gpus": gpu / n_model if gpu else 0}
        port, group, pin = 0, None, [{}] * n_policy
        if n_policy > 1:  # the group meets on 127.0.0.1 (gloo): its actors are packed onto one node
            from ray.util.placement_group import placement_group
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            group = placement_group([{"CPU": cpus}] * n_policy, strategy="STRICT_PACK")
            ray.get(group.ready())
            pin = [{"scheduling_strategy": PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=r)}
                   for r in range(n_policy)]
            port = free_port()  # free on the driver's node (the usual case: a local instance)
        policies = [ray.remote(PolicyWorker).options(**opts, **pin[r]).remote(*policy_args, r, n_policy, port)
                    for r in range(n_policy)]
        policy = policies[0]
        generator = policy if cfg.ray.colocated else ray.remote(GeneratorWorker).options(**opts).remote(*gen_args)
        reference = ray.remote(ReferenceWorker).options(**opts).remote(*ref_args) if cfg.grpo.kl_beta > 0 else None
        env = ray.remote(EnvWorker).options(num_cpus=0).remote(*env_args)
        ray.get([a.__ray_ready__.remote() for a in (*policies, generator, reference, env) if a is not None])
        w = Workers(policy, generator, reference, env, cfg.ray.colocated, policies=policies,
                    mini_batches=cfg.grpo.mini_batches, placement=group)
    if resume_from is not None:
        w.load_optimizer(resume_from)
    return w
