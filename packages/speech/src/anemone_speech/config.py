"""Typed configs of `anemone speech train`: data, tokenizer, model presets, augmentation, optimizer, trainer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from anemone_core.config import AnemoneConfig
from anemone_speech.synth import SynthConfig

# Size-named model presets; a recipe picks one with `model.preset` and may override any single field.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=32, n_layers=1, n_heads=2, ff_mult=2, conv_kernel=7, subsampling_channels=16),
    "small": dict(d_model=144, n_layers=4, n_heads=4, ff_mult=4, conv_kernel=15, subsampling_channels=64),
}


class ModelConfig(AnemoneConfig):
    preset: Literal["tiny", "small"] = "small"
    """Size preset; fields set explicitly override it (tiny: tests, small: real use on a CPU)."""
    d_model: int = Field(144, ge=8)
    """Width of the Conformer blocks."""
    n_layers: int = Field(4, ge=1)
    """Number of Conformer blocks."""
    n_heads: int = Field(4, ge=1)
    """Attention heads; must divide d_model."""
    ff_mult: int = Field(4, ge=1)
    """Feed-forward expansion."""
    conv_kernel: int = Field(15, ge=3)
    """Depthwise convolution kernel (odd)."""
    subsampling_factor: Literal[4, 8] = 4
    """Time reduction of the FastConformer front end: 4 (40 ms frames, fits characters) or 8 (80 ms, for BPE)."""
    subsampling_channels: int = Field(64, ge=4)
    """Channels of the subsampling convolutions."""
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout everywhere in the encoder."""
    n_mels: int = Field(80, ge=8)
    """Mel bins of the log-mel front end (25 ms window, 10 ms hop)."""

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            preset = MODEL_PRESETS.get(data.get("preset", "small"), {})
            data = {**preset, **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} does not divide d_model={self.d_model}: choose a divisor")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel={self.conv_kernel} must be odd (same-length convolution): use {self.conv_kernel + 1}")
        return self

    def kwargs(self) -> dict[str, Any]:
        """Plain keyword arguments of `ConformerCTC` (the model never sees this config)."""
        return self.model_dump(exclude={"preset"})


class TokenizerConfig(AnemoneConfig):
    kind: Literal["char", "bpe"] = "char"
    """`char`: one token per character; `bpe`: SentencePiece BPE trained on the training text (use with 8x)."""
    vocab_size: int = Field(256, ge=8)
    """BPE vocabulary size (ignored for char)."""


class DataConfig(AnemoneConfig):
    train_manifest: str | None = None
    """Training manifest (JSON lines). Unset: synthesize the default eSpeak corpus (see `synth`) and use it."""
    validation_manifest: str | None = None
    """Validation manifest; unset with train_manifest unset: the synthesized validation split."""
    test_manifest: str | None = None
    """Held-out test manifest scored after training; unset: the synthesized test split (if any)."""
    synth: SynthConfig = SynthConfig()
    """The corpus made when train_manifest is unset; cached under $ANEMONE_HOME/speech/."""
    sample_rate: int = Field(16_000, ge=8000)
    """Audio is resampled to this rate."""
    min_duration: float = Field(0.1, ge=0.0)
    """Training utterances shorter than this (seconds) are skipped."""
    max_duration: float = Field(20.0, gt=0.0)
    """Training utterances longer than this (seconds) are skipped (memory control)."""
    batch_size: int = Field(8, ge=1)
    """Utterances per batch, bucketed by duration (8 beat 16 at equal CPU time in short runs here: more updates)."""
    num_buckets: int = Field(8, ge=1)
    """Duration buckets: more buckets, less padding, less randomness."""
    num_workers: int = Field(0, ge=0)
    """DataLoader worker processes (0: load in the training process)."""
    speed_perturb: list[float] = []
    """Speed perturbation factors drawn per training utterance, e.g. [0.9, 1.0, 1.1]; empty: off."""


class AugmentConfig(AnemoneConfig):
    freq_masks: int = Field(2, ge=0)
    """SpecAugment frequency masks per utterance."""
    freq_width: int = Field(8, ge=0)
    """Widest frequency mask, in mel bins (light: strong masking slows a small model's short training)."""
    time_masks: int = Field(2, ge=0)
    """SpecAugment time masks per utterance."""
    time_width: float = Field(0.05, ge=0.0, le=1.0)
    """Widest time mask, as a fraction of the utterance."""
    freq_warp: float = Field(0.1, ge=0.0, lt=0.5)
    """Voice warp (VTLP-style): each utterance's formants move by a factor drawn from [1 - w, 1 + w] (0: off);
    aimed at the unseen test voices."""
    time_stretch: float = Field(0.1, ge=0.0, lt=0.5)
    """Tempo warp: each utterance's frames are resampled to a rate drawn from [1 - s, 1 + s] (0: off)."""


class OptimConfig(AnemoneConfig):
    lr: float = Field(2e-3, gt=0.0)
    """Peak learning rate of AdamW."""
    weight_decay: float = Field(1e-3, ge=0.0)
    """AdamW weight decay."""
    warmup_steps: int = Field(200, ge=0)
    """Linear warmup steps, then cosine decay to min_lr_ratio * lr at the last step."""
    min_lr_ratio: float = Field(0.05, ge=0.0, le=1.0)
    """Final learning rate as a fraction of lr."""


class TrainerConfig(AnemoneConfig):
    max_epochs: int = Field(12, ge=1)
    """Epochs over the training manifest: the default budget is this fixed amount of work (12 x 500 steps on the
    default corpus), so the result does not depend on how loaded the machine is."""
    max_steps: int = Field(-1, ge=-1)
    """Stop after this many optimizer steps (-1: no limit)."""
    max_minutes: float | None = Field(None, gt=0.0)
    """Safety cut: stop training after this many wall-clock minutes (null: none). When set, the learning-rate
    cosine ends by then too, and the best-WER weights are kept; the result then depends on the machine's load."""
    accelerator: str = "auto"
    """Lightning accelerator: auto, cpu or gpu."""
    devices: int = Field(1, ge=1)
    """Devices; more than one uses Lightning's DDP strategy (GPU)."""
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true"] = "32-true"
    """Lightning precision, e.g. 32-true, bf16-mixed (GPU)."""
    gradient_clip_val: float = Field(1.0, ge=0.0)
    """Clip the gradient norm (0: off)."""
    early_stopping_patience: int = Field(4, ge=1)
    """Stop when validation WER has not improved for this many validations."""
    val_check_interval: float = Field(1.0, gt=0.0)
    """Validate every this fraction of an epoch (1.0: once per epoch)."""
    log_every_n_steps: int = Field(10, ge=1)
    """Log training loss every n steps (CSV and TensorBoard)."""
    threads: int = Field(1, ge=1)
    """torch CPU threads (on a shared, loaded machine 1 thread was ~8x faster than 2 here)."""
    beam_size: int = Field(1, ge=1)
    """CTC decoding for the final test: 1 greedy, >1 prefix beam search."""
    lexicon_beam_size: int = Field(32, ge=0)
    """Character models: also score the test split with a beam of this size that spells only words of the
    training transcripts (closed-vocabulary decoding, reported as `test_lexicon`); 0: off."""


class SpeechTrainConfig(AnemoneConfig):
    output_dir: str = "speech_run"
    """Run folder: model/ (config, safetensors, tokenizer), checkpoints/, logs/, config.yaml, results.json."""
    data: DataConfig = DataConfig()
    """Manifests, audio, batching."""
    tokenizer: TokenizerConfig = TokenizerConfig()
    """Tokenizer, trained on the training manifest's text and saved with the model."""
    model: ModelConfig = ModelConfig()
    """Conformer-CTC size."""
    augment: AugmentConfig = AugmentConfig()
    """SpecAugment on the log-mel features during training."""
    optim: OptimConfig = OptimConfig()
    """Optimizer and schedule."""
    trainer: TrainerConfig = TrainerConfig()
    """Lightning Trainer settings."""
    seed: int = 1234
    """Seed of weights, batching and augmentation."""
    init_from: str | None = None
    """Fine-tune: start from this model folder (its architecture, weights and tokenizer; `model` and
    `tokenizer` are then ignored). Unset: train from scratch."""

    @model_validator(mode="after")
    def _check(self) -> SpeechTrainConfig:
        if self.data.train_manifest is not None and self.data.validation_manifest is None:
            raise ValueError("data.validation_manifest is unset while data.train_manifest is set: give both "
                             "(best-WER checkpointing needs validation data)")
        if self.init_from is not None:
            from pathlib import Path

            folder = Path(self.init_from).expanduser()
            if not (folder / "config.json").is_file():
                raise ValueError(f"init_from={self.init_from!r} is not a model folder (no config.json): pass the "
                                 "<output_dir>/model folder of an earlier `anemone speech train` run")
        return self
