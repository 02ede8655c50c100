"""Typed configs for `anemone automodel pretrain | finetune`. Recipes (YAML) hold only what differs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from anemone_core.config import AnemoneConfig


class ModelConfig(AnemoneConfig):
    path: str | None = None
    """Hugging Face model folder (config.json + safetensors + tokenizer). None: the embedded SmolLM2-135M-Instruct."""
    init: Literal["pretrained", "scratch"] = "pretrained"
    """'pretrained' loads the weights; 'scratch' builds the same architecture with fresh random weights (pretraining)."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Compute dtype: 'auto' is bf16 autocast on GPU (fp32 master weights) and fp32 on CPU."""
    config_overrides: dict[str, int | float | str | bool] = {}
    """Changes to the architecture's config.json before building a scratch model (e.g. num_hidden_layers: 4)."""


class DataConfig(AnemoneConfig):
    path: str | None = None
    """Local JSONL/JSON/Parquet file (or a Megatron dataset prefix, without .bin/.idx). None: the built-in set."""
    format: Literal["auto", "messages", "prompt_completion", "text", "megatron"] = "auto"
    """Row format; 'auto' detects it from the first row's keys (messages / prompt+completion / text)."""
    text_field: str = "text"
    """Column holding raw text for format=text."""
    seq_len: int = Field(256, ge=8)
    """Maximum tokens per sequence (examples are right-truncated; packed rows hold exactly this many)."""
    pack: bool = False
    """Pack several examples per row with per-document attention (no attention across documents)."""
    shuffle: bool = True
    """Shuffle every epoch with a permutation drawn from `train.seed` + epoch (deterministic, resumable)."""
    max_examples: int | None = Field(None, ge=1)
    """Use only the first N rows (None: all)."""


class LoraConfig(AnemoneConfig):
    enabled: bool = True
    """Train LoRA adapters (peft) instead of all weights."""
    r: int = Field(16, ge=1)
    """LoRA rank."""
    alpha: float = Field(32.0, gt=0)
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    """Module names that get adapters, or ['all-linear']."""


class OptimConfig(AnemoneConfig):
    lr: float = Field(2e-4, gt=0)
    """Peak learning rate (AdamW)."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay on matrices (never on biases and norms)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    eps: float = Field(1e-8, gt=0)
    """AdamW epsilon."""
    warmup_steps: int = Field(3, ge=0)
    """Linear warmup steps."""
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    """Cosine decays to lr * min_lr_ratio at the last step."""
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Clip the global gradient norm to this (None: no clipping; the norm is logged either way)."""


class TrainConfig(AnemoneConfig):
    steps: int = Field(30, ge=1)
    """Optimizer steps."""
    micro_batch_size: int = Field(8, ge=1)
    """Sequences per forward pass on each data-parallel rank."""
    grad_accum: int = Field(1, ge=1)
    """Micro-batches accumulated per optimizer step (global batch = micro_batch_size * grad_accum * dp)."""
    seed: int = 0
    """Seed for shuffling, LoRA init and dropout."""
    activation_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass (less memory, ~30% more compute)."""
    log_every: int = Field(1, ge=1)
    """Write a metrics line every N steps."""


class ParallelConfig(AnemoneConfig):
    dp: int | None = Field(None, ge=1)
    """Data-parallel (FSDP2) size; None: world_size / tp."""
    tp: int = Field(1, ge=1)
    """Tensor-parallel size (DTensor plans for Llama, Qwen2/3, Mistral)."""
    timeout_s: float = Field(600.0, gt=0)
    """Collective timeout: a crashed rank makes the others fail after this instead of hanging."""


class CheckpointConfig(AnemoneConfig):
    every: int = Field(0, ge=0)
    """Save a sharded DCP checkpoint every N steps (0: only at the end when `at_end`)."""
    at_end: bool = False
    """Also save a DCP checkpoint after the last step (to continue training later)."""
    resume: bool = False
    """Continue from the latest checkpoint in output.dir/checkpoints (exact trajectory: model, optimizer,
    scheduler, data position, RNG)."""
    keep: int = Field(2, ge=1)
    """How many recent checkpoints to keep."""


class OutputConfig(AnemoneConfig):
    dir: str | None = None
    """Run folder (config, metrics, checkpoints, outputs). None: runs/automodel/<task>-<UTC time>."""
    save_hf: bool = True
    """Write the consolidated Hugging Face folder (full training) or the merged folder (LoRA) to <dir>/hf."""
    max_shard_mb: int = Field(2048, ge=1)
    """Largest safetensors shard of the HF folder."""
    overwrite: bool = False
    """Allow a run folder that already holds outputs (otherwise refused)."""


class MetricsConfig(AnemoneConfig):
    sinks: list[Literal["jsonl", "tensorboard", "wandb", "mlflow"]] = ["jsonl"]
    """Where metrics go besides the progress bar."""
    peak_tflops: float | None = Field(None, gt=0)
    """Peak device TFLOP/s per rank for MFU. None: looked up for known GPUs; unknown (MFU not reported) on CPU."""


class AutoModelConfig(AnemoneConfig):
    """One recipe: what to train, on what, how, and where the outputs go."""

    task: Literal["finetune", "pretrain"] = "finetune"
    """What the run is: SFT/LoRA of a pretrained model, or pretraining on raw text."""
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    lora: LoraConfig = LoraConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    parallel: ParallelConfig = ParallelConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    output: OutputConfig = OutputConfig()
    metrics: MetricsConfig = MetricsConfig()

    @model_validator(mode="after")
    def _cross_field(self) -> AutoModelConfig:
        problems = []
        if self.optim.warmup_steps >= self.train.steps and self.train.steps > 1:
            problems.append(f"optim.warmup_steps = {self.optim.warmup_steps} must be < train.steps = {self.train.steps}: "
                            "lower warmup_steps or raise steps")
        if self.checkpoint.resume and self.output.dir is None:
            problems.append("checkpoint.resume = true needs output.dir: set output.dir=<the run folder to continue>")
        if self.lora.enabled and self.parallel.tp > 1:
            problems.append(f"lora.enabled = true with parallel.tp = {self.parallel.tp}: LoRA runs with FSDP (tp=1) "
                            "only; set parallel.tp=1 or lora.enabled=false")
        if self.task == "pretrain" and self.lora.enabled:
            problems.append("task = pretrain with lora.enabled = true: pretraining trains every weight; "
                            "set lora.enabled=false")
        if self.model.config_overrides and self.model.init != "scratch":
            problems.append("model.config_overrides needs model.init = scratch (pretrained weights fix the shapes): "
                            "set model.init=scratch or drop the overrides")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class FinetuneConfig(AutoModelConfig):
    """`anemone automodel finetune`: LoRA SFT of the embedded model on the built-in instruction set by default."""


class PretrainModelConfig(ModelConfig):
    init: Literal["pretrained", "scratch"] = "scratch"
    """'scratch' (default for pretraining) builds the architecture with fresh weights; 'pretrained' continues one."""
    # A shrunk SmolLM2 (same tokenizer, 4 narrow layers) so the no-argument run finishes in minutes on a CPU.
    config_overrides: dict[str, int | float | str | bool] = {
        "num_hidden_layers": 4, "hidden_size": 192, "intermediate_size": 512, "num_attention_heads": 6,
        "num_key_value_heads": 2}
    """Changes to the architecture's config.json before building the scratch model ({} keeps it as is)."""


class PretrainDataConfig(DataConfig):
    format: Literal["auto", "messages", "prompt_completion", "text", "megatron"] = "text"
    """Raw text rows (`text_field`) or a Megatron .bin/.idx prefix (megatron)."""
    pack: bool = True
    """Pack documents into full rows with per-document attention."""
    seq_len: int = Field(128, ge=8)
    """Tokens per packed row."""


class PretrainTrainConfig(TrainConfig):
    micro_batch_size: int = Field(4, ge=1)
    """Packed rows per forward pass on each data-parallel rank."""


class PretrainLoraConfig(LoraConfig):
    enabled: bool = False
    """Pretraining trains every weight."""


class PretrainOptimConfig(OptimConfig):
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate (AdamW)."""
    weight_decay: float = Field(0.1, ge=0)
    """AdamW weight decay on matrices."""


class PretrainConfig(AutoModelConfig):
    """`anemone automodel pretrain`: a fresh model of the embedded model's architecture (or any HF config) on raw text."""

    task: Literal["finetune", "pretrain"] = "pretrain"
    # Section subclasses (not default instances), so `model.path=...` keeps the other pretraining defaults.
    model: PretrainModelConfig = PretrainModelConfig()
    data: PretrainDataConfig = PretrainDataConfig()
    lora: PretrainLoraConfig = PretrainLoraConfig()
    optim: PretrainOptimConfig = PretrainOptimConfig()
    train: PretrainTrainConfig = PretrainTrainConfig()
