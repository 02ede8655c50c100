"""The server's settings, checked before the model loads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from anemone_core.config import AnemoneConfig


class ServeConfig(AnemoneConfig):
    model: str | None = None
    """HF model folder, or an ONNX export folder for backend=onnx (default: the embedded SmolLM2-135M-Instruct)."""
    backend: Literal["torch", "onnx", "vllm"] = "torch"
    """torch (CPU/GPU eager with continuous batching), onnx (ONNX Runtime, continuous batching) or vllm (GPU, extra)."""
    served_model_name: str | None = None
    """Name in /v1/models and the `model` field clients send (default: the folder's name)."""
    host: str = "127.0.0.1"
    """Address to bind; loopback unless you mean to expose the server."""
    port: int = Field(8000, ge=0, le=65535)
    """TCP port (0 picks a free one)."""
    api_key: str | None = None
    """If set, requests must send `Authorization: Bearer <key>` (also read from $ANEMONE_API_KEY)."""
    max_batch_size: int = Field(16, ge=1, le=256)
    """Most requests decoded together (continuous batching); 1 decodes one request at a time."""
    batch_wait_ms: float = Field(10.0, ge=0.0, le=1000.0)
    """How long an idle engine waits after a first request for more to prefill with it."""
    max_model_len: int | None = Field(None, ge=16)
    """Context length (prompt + completion) accepted (default: min(model's, 4096))."""
    max_tokens_limit: int = Field(1024, ge=1)
    """Largest max_tokens a request may ask for."""
    threads: int | None = Field(None, ge=1)
    """torch / ONNX Runtime intra-op threads (default: the library's)."""
    replicas: int = Field(0, ge=0, le=64)
    """0: one process with uvicorn; N >= 1: N Ray Serve replicas of the same app."""
