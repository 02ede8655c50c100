"""Build an engine from a ServeConfig: torch eager or ONNX Runtime (both with continuous batching), or vLLM (GPU)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from anemone_core.errors import AnemoneError
from anemone_export.server.config import ServeConfig
from anemone_export.server.engine import BatchingEngine, Engine, onnx_step, torch_step


def eos_ids(tokenizer, folder: Path) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen = folder / "generation_config.json"
    if gen.is_file():
        e = json.loads(gen.read_text()).get("eos_token_id")
        ids |= set(e) if isinstance(e, list) else ({e} if e is not None else set())
    return ids


def _context(cfg: ServeConfig, model_max: int | None) -> int:
    default = min(model_max or 4096, 4096)
    if cfg.max_model_len and model_max and cfg.max_model_len > model_max:
        raise AnemoneError(f"max_model_len={cfg.max_model_len} exceeds the model's max_position_embeddings={model_max}: "
                           f"choose max_model_len <= {model_max}")
    return cfg.max_model_len or default


def _onnx_folder(cfg: ServeConfig) -> Path:
    """An ONNX export folder as given, or the HF model exported (and validated) once into the cache."""
    from anemone_core.io import anemone_home
    from anemone_core.models import resolve_model

    if cfg.model and (Path(cfg.model).expanduser() / "anemone_onnx.json").is_file():
        return Path(cfg.model).expanduser()
    folder = resolve_model(cfg.model)
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    out = anemone_home() / "exports" / f"onnx-{folder.name}-{key}"
    if not (out / "validation.json").is_file():
        from anemone_export.onnx_export import export_onnx
        from anemone_export.sources import load_source

        export_onnx(load_source(str(folder)), out, overwrite=True)
    return out


def build_engine(cfg: ServeConfig) -> Engine:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if cfg.backend == "vllm":
        from anemone_export.server.vllm_engine import VllmEngine

        return VllmEngine(cfg)
    if cfg.backend == "onnx":
        folder = _onnx_folder(cfg)
        step, layout = onnx_step(folder / "model.onnx", cfg.threads)
        model_max = json.loads((folder / "anemone_onnx.json").read_text()).get("max_position_embeddings")
    else:
        import torch

        from anemone_core.models import resolve_model

        folder = resolve_model(cfg.model)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        step, layout = torch_step(model)
        model_max = getattr(model.config, "max_position_embeddings", None)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    name = cfg.served_model_name or (folder.name if cfg.model else "smollm2-135m-instruct")
    return BatchingEngine(name, step, layout, tok, max_model_len=_context(cfg, model_max),
                          eos_ids=eos_ids(tok, folder), max_batch_size=cfg.max_batch_size,
                          batch_wait_ms=cfg.batch_wait_ms, threads=cfg.threads)
