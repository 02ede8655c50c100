"""The `anemone eval run` config: what to evaluate, on which tasks, how, and where results go."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from anemone_core.config import AnemoneConfig

DEFAULT_TASKS = ["arith_mc", "arith_gen", "stdlib_docs"]


class LocalConfig(AnemoneConfig):
    batch_size: int = Field(16, ge=1)
    """Rows per forward pass (a row holds one context and all its continuations). Scores do not depend on it."""
    device: str = "cpu"
    """'cpu' or 'cuda[:N]'."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights' dtype; log-softmax is always computed in float32."""
    prefix_cache: bool = True
    """Pack the continuations sharing a context (a question's choices) into one row holding the context once."""
    threads: int | None = Field(None, ge=1)
    """torch CPU threads (torch.set_num_threads); default: torch's choice. On a shared machine 1 can be fastest."""
    max_length: int | None = Field(None, ge=2)
    """Context window; default: the model config's max_position_embeddings."""


class EndpointConfig(AnemoneConfig):
    model: str | None = None
    """Model name sent to the endpoint; default: the first entry of GET /models."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (sent as a Bearer token when set)."""
    concurrency: int = Field(8, ge=1)
    """Requests in flight at once."""
    batch_size: int = Field(8, ge=1)
    """Prompts per /completions request (the API takes a list; a server that refuses one gets 1 per request)."""
    timeout_s: float = Field(300.0, gt=0)
    """Seconds to wait for one answer before retrying it (a queued request on a busy server waits too)."""
    max_retries: int = Field(5, ge=0)
    """Retries per request after 429/5xx, a timeout or a connection error, with exponential backoff."""
    backoff_s: float = Field(0.5, ge=0)
    """First backoff; doubles per retry (with jitter), capped at 30 s; a Retry-After header wins."""


class EvalConfig(AnemoneConfig):
    model: str | None = None
    """Hugging Face model folder; default: the embedded SmolLM2-135M-Instruct. Ignored with `endpoint`."""
    endpoint: str | None = None
    """OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1): evaluate a server instead of a folder."""
    tasks: list[str] = Field(default_factory=lambda: list(DEFAULT_TASKS))
    """Task names (see `anemone eval ls`) or task YAML paths."""
    task_dirs: list[str] = Field(default_factory=list)
    """Extra folders of task YAML files whose tasks can be named in `tasks`."""
    limit: int | None = Field(None, ge=1)
    """Evaluate only the first N documents of each task."""
    num_fewshot: int | None = Field(None, ge=0)
    """Few-shot examples per question; default: the task's own num_fewshot."""
    fewshot_seed: int = 1234
    """Seed of the per-document few-shot draw (the same seed gives the same prompts)."""
    chat_template: bool = False
    """Wrap prompts in the model's chat template (recorded in results; scores change with it)."""
    system_prompt: str | None = None
    """System message (chat) or text prepended to each prompt (plain)."""
    strip_reasoning: bool = False
    """Remove <think>...</think> from generated answers before extraction."""
    bootstrap: int = Field(1000, ge=0)
    """Bootstrap resamples for the 95% confidence intervals."""
    output: str | None = None
    """Results folder; default: ./anemone-eval/<model>-<UTC time>."""
    overwrite: bool = False
    """Replace an existing results folder."""
    cache: bool | None = None
    """SQLite request cache (resume a killed run without re-querying); default: on for endpoints, off locally."""
    cache_path: str | None = None
    """Cache file; default: $ANEMONE_HOME/eval-cache.sqlite."""
    log_requests: bool = False
    """Write every request and answer to requests.jsonl in the results folder."""
    local: LocalConfig = Field(default_factory=LocalConfig)
    endpoint_opts: EndpointConfig = Field(default_factory=EndpointConfig)

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        if not self.tasks:
            raise ValueError("tasks is empty: name at least one task (see `anemone eval ls`)")
        return self
