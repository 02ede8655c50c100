"""A trained model as a folder: config.json (model kwargs + metadata), model.safetensors, tokenizer files.

`anemone speech transcribe --model FOLDER` loads it; nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anemone_core.errors import AnemoneError
from anemone_speech.conformer import ConformerCTC
from anemone_speech.tokenizers import BPETokenizer, CharTokenizer, load_tokenizer

FORMAT = "anemone-speech-ctc/1"


def save_model(folder: Path, model: ConformerCTC, model_kwargs: dict[str, Any],
               tokenizer: CharTokenizer | BPETokenizer, metadata: dict[str, Any] | None = None) -> None:
    """Write into an existing (temporary) folder; callers wrap it in `atomic_dir`."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": FORMAT})
    cfg = {"format": FORMAT, "model": model_kwargs, "vocab_size": tokenizer.vocab_size,
           "tokenizer": tokenizer.kind, **(metadata or {})}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    tokenizer.save(folder)


def load_model(folder: str | Path, device: str = "cpu") -> tuple[ConformerCTC, CharTokenizer | BPETokenizer, dict]:
    """Rebuild the model from config.json and load the safetensors weights; returns (model in eval, tokenizer, config)."""
    from safetensors.torch import load_file

    p = Path(folder).expanduser()
    if not (p / "config.json").is_file() or not (p / "model.safetensors").is_file():
        raise AnemoneError(f"--model {p}: not a speech model folder (needs config.json and model.safetensors): "
                           "train one with `anemone speech train` and pass its <output_dir>/model")
    cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    if cfg.get("format") != FORMAT:
        raise AnemoneError(f"--model {p}: config.json format {cfg.get('format')!r} is not {FORMAT!r}")
    tokenizer = load_tokenizer(p)
    model = ConformerCTC(vocab_size=cfg["vocab_size"], **cfg["model"])
    model.load_state_dict(load_file(str(p / "model.safetensors")))
    return model.to(device).eval(), tokenizer, cfg
