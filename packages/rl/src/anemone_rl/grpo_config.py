"""`anemone rl grpo` config: every batch-arithmetic rule is checked here, before Ray starts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from anemone_core.config import AnemoneConfig
from anemone_rl.config import ModelConfig, OptimConfig, RunConfig


class GRPOAlgoConfig(AnemoneConfig):
    steps: int = Field(2, ge=1)
    """Policy updates (each: generate, score, one optimizer step per mini-batch)."""
    prompts_per_step: int = Field(4, ge=1)
    """Prompts sampled per step."""
    generations_per_prompt: int = 4
    """Responses per prompt (the group); advantages compare responses of the same prompt, so >= 2."""
    mini_batches: int = Field(1, ge=1)
    """Optimizer steps per GRPO step (the batch is split; > 1 makes later mini-batches off-policy)."""
    micro_batch_size: int = Field(4, ge=1)
    """Sequences per forward/backward (per policy worker); gradients accumulate over a mini-batch."""
    policy_workers: int = Field(1, ge=1)
    """Policy (trainer) workers: > 1 starts that many Ray actors that shard the model with FSDP2 (gloo, CPU,
    one machine) and each train on 1/N of every mini-batch; the update equals one worker's up to fp32 rounding."""
    max_new_tokens: int = Field(24, ge=1)
    """Response length cap."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature (the trainer scores logprobs at the same temperature)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling (1 = off; anything else biases the policy gradient)."""
    top_k: int = Field(0, ge=0)
    """Top-k sampling (0 = off)."""
    gen_matmul_dtype: Literal["float32", "bfloat16"] = "float32"
    """Precision of the torch generator's weight matmuls: bfloat16 (fp32 accumulation, the rest fp32; needs a
    CPU with AMX or AVX512-BF16, or a GPU) samples 2-4x faster at batch >= 8 on such a CPU; its logprobs then
    differ from the trainer's by bf16 rounding (metric `logprob_mismatch`, ~0.02-0.03 per token on the
    embedded model). The trainer recomputes every logprob the loss uses, so this changes only which tokens
    are sampled, as a bf16 vLLM does."""
    eps_low: float = Field(0.2, ge=0)
    """Ratio clip below: 1 - eps_low."""
    eps_high: float = Field(0.28, ge=0)
    """Ratio clip above: 1 + eps_high (clip-higher, DAPO)."""
    kl_beta: float = Field(0.01, ge=0)
    """Weight of the k3 KL to the frozen reference (0 = no reference worker)."""
    normalization: Literal["token", "sequence"] = "token"
    """Loss normalization: every token equal, or every sequence equal."""
    leave_one_out: bool = False
    """Baseline = mean of the other generations of the prompt (RLOO) instead of the group mean."""
    scale_by_std: bool = True
    """Divide advantages by the group's reward std."""
    filter_equal_groups: bool = False
    """Drop groups whose rewards are all equal (they carry no gradient) from the update."""
    share_prompt_forward: bool = True
    """Trainer and reference run each distinct prompt of a micro-batch once and the G responses on its KV cache
    (`shared_prompt.py`); the logprobs and gradients equal the plain forward's to float rounding. Largest gain
    when prompts are long and responses short; micro-batches holding whole groups share the most."""

    @field_validator("generations_per_prompt")
    @classmethod
    def _group(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"generations_per_prompt = {v}: GRPO compares responses of one prompt, so it needs at "
                             f"least 2; set grpo.generations_per_prompt=4 (or more)")
        return v

    @model_validator(mode="after")
    def _divides(self) -> GRPOAlgoConfig:
        batch = self.prompts_per_step * self.generations_per_prompt
        if batch % self.mini_batches:
            raise ValueError(f"prompts_per_step * generations_per_prompt = {self.prompts_per_step} * "
                             f"{self.generations_per_prompt} = {batch} sequences do not split into mini_batches = "
                             f"{self.mini_batches}: choose mini_batches dividing {batch}")
        mini = batch // self.mini_batches
        if mini % self.micro_batch_size:
            raise ValueError(f"a mini-batch of {mini} sequences (= {batch} / mini_batches {self.mini_batches}) does "
                             f"not split into micro_batch_size = {self.micro_batch_size}: choose micro_batch_size "
                             f"in {[d for d in range(1, mini + 1) if mini % d == 0]}")
        n = self.policy_workers
        if mini % (n * self.micro_batch_size):
            workers = [w for w in range(1, mini + 1) if mini % (w * self.micro_batch_size) == 0]
            sizes = [d for d in range(1, mini // n + 1) if mini % (n * d) == 0]
            raise ValueError(f"a mini-batch of {mini} sequences (= {batch} / mini_batches {self.mini_batches}) does "
                             f"not give policy_workers = {n} whole micro-batches of micro_batch_size = "
                             f"{self.micro_batch_size} each (needs a multiple of {n} x {self.micro_batch_size} = "
                             f"{n * self.micro_batch_size}): choose policy_workers in {workers}"
                             + (f", or micro_batch_size in {sizes}" if sizes else "")
                             + ", or more prompts_per_step")
        return self


class GRPODataConfig(AnemoneConfig):
    train: str = "arithmetic:train"
    """Prompt rows: `arithmetic:train`, a .jsonl/.json/.parquet file or a datasets folder (`prompt` + env fields)."""
    eval: str | None = "arithmetic:test"
    """Held-out prompt rows for greedy accuracy (unset = no evaluation)."""
    eval_prompts: int = Field(16, ge=1)
    """How many held-out prompts to evaluate (the first N)."""
    eval_every: int = Field(0, ge=0)
    """Evaluate every N steps (0 = only before and after training)."""
    max_prompt_tokens: int = Field(256, ge=1)
    """Prompts longer than this are dropped (counted in the summary)."""


class EnvConfig(AnemoneConfig):
    reward: str = "math"
    """Reward function: a registered name (`math`) or `package.module:function` taking (row, response)."""
    timeout_s: float = Field(5.0, gt=0)
    """Per-response time limit of the reward function; a timeout scores 0 and is counted."""
    shuffle_rewards: bool = False
    """Control experiment: permute rewards across the batch before computing advantages."""


class RayConfig(AnemoneConfig):
    enabled: bool | Literal["auto"] = "auto"
    """true = workers are Ray actors; false = the same worker classes in this process (debugging, quick runs);
    auto = Ray, falling back to in-process (with a warning) when a local Ray instance fails to start."""
    address: str | None = None
    """Join this Ray cluster (`auto` or host:port); unset = start a local instance."""
    num_cpus: int | None = None
    """CPUs of a local instance (unset = all of this machine's)."""
    colocated: bool = True
    """Trainer and generator share one worker (refit = re-fuse in place); false = separate workers and a
    weight transfer through the object store each step."""
    generator: Literal["torch", "vllm"] = "torch"
    """Generation backend: torch (CPU or GPU) or vllm (GPU, `anemone-rl[vllm]`, separate mode)."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Device of the policy, reference and torch generator workers."""


class GRPOConfig(AnemoneConfig):
    """GRPO: sample groups of responses, score them in the environment, push the policy toward the better ones."""

    model: ModelConfig = ModelConfig()
    grpo: GRPOAlgoConfig = GRPOAlgoConfig()
    optim: OptimConfig = OptimConfig(lr=1e-6)
    data: GRPODataConfig = GRPODataConfig()
    env: EnvConfig = EnvConfig()
    ray: RayConfig = RayConfig()
    run: RunConfig = RunConfig(out="outputs/rl-grpo")

    @model_validator(mode="after")
    def _backend(self) -> GRPOConfig:
        if self.ray.generator == "vllm" and self.ray.colocated:
            raise ValueError("ray.generator = 'vllm' runs in its own worker: set ray.colocated=false")
        if self.grpo.gen_matmul_dtype != "float32":
            if self.ray.generator == "vllm":
                raise ValueError(f"grpo.gen_matmul_dtype = {self.grpo.gen_matmul_dtype!r} sets the torch generator's "
                                 "precision; vLLM runs in the model's dtype (model.dtype): set "
                                 "grpo.gen_matmul_dtype=float32 with ray.generator=vllm")
            if self.ray.device == "cpu" and not self.ray.address:  # a local run: this CPU is the workers' CPU
                from anemone_rl.generation.decoders import check_matmul_dtype

                try:
                    check_matmul_dtype(self.grpo.gen_matmul_dtype, "cpu")
                except ValueError as exc:
                    raise ValueError(f"grpo.gen_matmul_dtype: {exc}") from None
        n = self.grpo.policy_workers
        if n > 1 and self.ray.enabled is False:
            raise ValueError(f"grpo.policy_workers = {n} runs one Ray actor per worker (an FSDP2 group), but "
                             "ray.enabled = false runs the workers in this process: set ray.enabled=true (or auto), "
                             "or grpo.policy_workers=1")
        if n > 1 and self.ray.device != "cpu":
            raise ValueError(f"grpo.policy_workers = {n} shards the policy over a gloo (CPU) process group, but "
                             f"ray.device = {self.ray.device!r}: set ray.device=cpu, or grpo.policy_workers=1 "
                             "(a GPU group over NCCL is not implemented)")
        return self
