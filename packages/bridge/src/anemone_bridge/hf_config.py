"""Reading an HF folder's config.json without importing transformers.

`import transformers` plus `AutoConfig` costs about as much CPU time as the whole conversion floor (loading
and saving the safetensors), so `import` and `export` read config.json themselves: the raw values, with the
transformers 5.19 class defaults for the few fields the bridge reads when a file leaves them out.
`tests/test_bridge_hf_config.py` checks every field against `AutoConfig` (defaults included), so the two cannot
drift apart silently. `HFConfig.transformers()` gives transformers' own config where one is needed (the RoPE
scaling functions, `verify`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from anemone_core.errors import AnemoneError
from anemone_core.io import atomic_write_text

REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")

# transformers 5.19's class defaults for the optional fields read here (None: derived, see HFConfig)
_BASE: dict[str, Any] = {
    "num_key_value_heads": None, "head_dim": None, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
    "max_position_embeddings": 2048, "rope_theta": 10000.0, "sliding_window": None, "use_sliding_window": None,
    "max_window_layers": None, "layer_types": None, "dtype": None,
}
_QWEN_SW = {"sliding_window": 4096, "use_sliding_window": False}
DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": _BASE,
    "mistral": _BASE | {"num_key_value_heads": 8, "max_position_embeddings": 131072, "sliding_window": 4096},
    "qwen2": _BASE | _QWEN_SW | {"num_key_value_heads": 32, "max_position_embeddings": 32768,
                                 "max_window_layers": 28},
    "qwen3": _BASE | _QWEN_SW | {"num_key_value_heads": 32, "head_dim": 128, "max_position_embeddings": 32768,
                                 "max_window_layers": 28},
    "mixtral": _BASE | {"num_key_value_heads": 8, "rms_norm_eps": 1e-5, "max_position_embeddings": 131072,
                        "rope_theta": 1e6, "num_experts_per_tok": 2, "num_local_experts": 8, "num_experts": 8},
    "qwen3_moe": _BASE | _QWEN_SW | {"num_key_value_heads": 4, "max_position_embeddings": 32768,
                                     "num_experts_per_tok": 8, "num_experts": 128, "num_local_experts": 128,
                                     "moe_intermediate_size": 768,
                                     "norm_topk_prob": False, "decoder_sparse_step": 1, "mlp_only_layers": None},
}


class HFConfig:
    """The config.json of an HF folder as attributes (`cfg.hidden_size`), with class defaults filled in."""

    def __init__(self, raw: dict[str, Any], folder: str | Path | None = None) -> None:
        self.raw = dict(raw)
        self.folder = None if folder is None else Path(folder)
        values = dict(DEFAULTS.get(str(raw.get("model_type")), _BASE))
        values.update({k: v for k, v in raw.items() if k != "torch_dtype"})
        for name in ("num_experts", "num_local_experts"):  # one field under two names (transformers' attribute_map)
            if name in raw and "num_experts" in values:
                values["num_experts"] = values["num_local_experts"] = raw[name]
        if values.get("dtype") is None and "torch_dtype" in raw:
            values["dtype"] = raw["torch_dtype"]  # the transformers 4 name
        if values.get("num_key_value_heads") is None:
            values["num_key_value_heads"] = values.get("num_attention_heads")
        if values.get("head_dim") is None and values.get("num_attention_heads"):
            values["head_dim"] = values.get("hidden_size", 0) // values["num_attention_heads"]
        values["rope_parameters"] = _rope_parameters(raw, values)
        values["sliding_window"], values["layer_types"] = _attention_layers(values)
        self.__dict__.update({k: v for k, v in values.items() if k not in ("raw", "folder")})

    def __getattr__(self, name: str) -> Any:  # only called for fields config.json lacks and we have no default
        raise AttributeError(f"config.json has no '{name}'")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)

    def save_pretrained(self, folder: str | Path) -> None:
        """Write config.json as it was read (the exported folder carries the source's config unchanged)."""
        atomic_write_text(Path(folder) / "config.json", json.dumps(self.raw, indent=2, sort_keys=True) + "\n")

    def transformers(self):
        """transformers' own config object for this folder (imports transformers)."""
        if self.folder is None:
            raise AnemoneError("this HFConfig was not read from a folder: transformers' config is unavailable")
        return _transformers_config(str(self.folder))


@functools.cache
def _transformers_config(folder: str):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder, local_files_only=True)


def _rope_parameters(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """transformers 5's `rope_parameters`, also from the older `rope_theta` + `rope_scaling` fields."""
    if isinstance(raw.get("rope_parameters"), dict):
        params = dict(raw["rope_parameters"])
    else:
        params = dict(raw.get("rope_scaling") or {})
        if "type" in params:
            params.setdefault("rope_type", params["type"])  # transformers keeps the old key beside the new one
    params.setdefault("rope_theta", float(raw.get("rope_theta", values["rope_theta"])))
    params.setdefault("rope_type", "default")
    return params


def _attention_layers(values: dict[str, Any]) -> tuple[int | None, list[str] | None]:
    """(sliding window or None, per-layer attention types), as transformers derives them."""
    window = values.get("sliding_window")
    if values.get("use_sliding_window") is False:
        window = None  # Qwen: the window is only used with use_sliding_window
    layers = values.get("layer_types")
    if layers is None and values.get("max_window_layers") is not None:
        layers = ["sliding_attention" if window is not None and i >= values["max_window_layers"] else "full_attention"
                  for i in range(values.get("num_hidden_layers", 0))]
    return window, layers


def read_hf_config(path: str | Path) -> HFConfig:
    """The config of an HF folder, with clear errors for a missing or broken config.json."""
    folder = Path(path)
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise AnemoneError(f"'{folder}' has no config.json: give a Hugging Face model folder (or omit --model "
                           "for the embedded model)")
    try:
        raw = json.loads(cfg.read_text())
    except ValueError as exc:
        raise AnemoneError(f"'{cfg}' is not valid JSON ({exc}): fix or re-save the config") from None
    if not isinstance(raw, dict):
        raise AnemoneError(f"'{cfg}' holds a {type(raw).__name__}, not a JSON object: fix or re-save the config")
    return HFConfig(raw, folder)


def check_required(config: HFConfig, folder: str | Path) -> None:
    """Every field the conversion cannot default is present (after the architecture is known to be supported)."""
    missing = [k for k in REQUIRED if config.raw.get(k) is None]
    if missing:
        raise AnemoneError(f"config.json in '{folder}' lacks {missing}: a model config names its sizes; re-save "
                           "the folder with transformers' save_pretrained")
