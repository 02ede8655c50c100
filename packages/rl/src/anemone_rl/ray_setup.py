"""Start (or join) Ray and the GRPO worker group; the one place that knows colocated vs separate mode."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anemone_core.errors import AnemoneError, require
from anemone_core.io import atomic_dir
from anemone_rl.grpo_config import GRPOConfig


@dataclass
class Workers:
    """The worker group. With Ray the members are actor handles; with `ray.enabled=false` they are the same
    classes in this process (for debugging and quick experiments). `call` hides the difference."""

    policy: Any
    generator: Any  # the policy itself in colocated mode
    reference: Any | None
    env: Any
    colocated: bool
    use_ray: bool = True

    def call(self, actor: Any, method: str, *args: Any) -> Any:
        if not self.use_ray:
            return getattr(actor, method)(*args)
        import ray

        return ray.get(getattr(actor, method).remote(*args))

    def refit(self) -> float:
        """Push the policy's new weights to the generator; returns wall seconds (measured in both modes)."""
        t0 = time.perf_counter()
        if self.colocated:
            self.call(self.policy, "refit_generator")
        elif self.use_ray:
            import ray

            ray.get(self.generator.load_weights.remote(self.policy.state_dict.remote()))
        else:
            self.generator.load_weights(self.policy.state_dict())
        return time.perf_counter() - t0

    def save(self, folder: Path) -> None:
        self.call(self.policy, "save", str(folder))

    def save_model(self, out: Path) -> None:
        with atomic_dir(out, overwrite=True) as tmp:
            self.call(self.policy, "save_hf", str(tmp))

    def shutdown(self) -> None:
        if not self.use_ray:
            return
        import ray

        for actor in {id(a): a for a in (self.policy, self.generator, self.reference, self.env) if a}.values():
            ray.kill(actor)


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
    gen_args = (start_path, dtype, cfg.ray.generator, threads, dev, cfg.run.seed)
    # The reference is always the run's starting model, also after a resume.
    ref_args = (base, dtype, cfg.grpo.micro_batch_size, cfg.grpo.temperature, threads, dev)
    env_args = (cfg.env.reward, cfg.env.timeout_s)
    use_ray = cfg.ray.enabled is not False
    if use_ray and cfg.ray.enabled == "auto" and not cfg.ray.address:
        try:
            init_ray(None, cfg.ray.num_cpus)
        except AnemoneError as exc:
            import sys

            print(f"warning: {exc}\nwarning: ray.enabled=auto: running the GRPO workers in this process instead "
                  "(set ray.enabled=true to make this an error)", file=sys.stderr)
            use_ray = False
    if not use_ray:
        policy = PolicyWorker(*policy_args)
        w = Workers(policy, policy if cfg.ray.colocated else GeneratorWorker(*gen_args),
                    ReferenceWorker(*ref_args) if cfg.grpo.kl_beta > 0 else None, EnvWorker(*env_args),
                    cfg.ray.colocated, use_ray=False)
    else:
        import ray

        init_ray(cfg.ray.address, cfg.ray.num_cpus)
        gpu = 1 if cfg.ray.device == "cuda" else 0
        n_model = 1 + (not cfg.ray.colocated) + (cfg.grpo.kl_beta > 0)
        # The workers mostly run one after another, so they share the CPUs instead of each reserving one
        # (which would leave actors pending forever on a 2-CPU machine).
        cpus = min(1.0, ray.available_resources().get("CPU", 1.0) / (n_model + 1))
        opts = {"num_cpus": cpus, "num_gpus": gpu / n_model if gpu else 0}
        policy = ray.remote(PolicyWorker).options(**opts).remote(*policy_args)
        generator = policy if cfg.ray.colocated else ray.remote(GeneratorWorker).options(**opts).remote(*gen_args)
        reference = ray.remote(ReferenceWorker).options(**opts).remote(*ref_args) if cfg.grpo.kl_beta > 0 else None
        env = ray.remote(EnvWorker).options(num_cpus=0).remote(*env_args)
        ray.get([a.__ray_ready__.remote() for a in (policy, generator, reference, env) if a is not None])
        w = Workers(policy, generator, reference, env, cfg.ray.colocated)
    if resume_from is not None:
        w.call(w.policy, "load_optimizer", str(resume_from))
    return w
