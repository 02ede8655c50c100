"""`AutoBridge`: the public Python API, modelled on Megatron-Bridge's.

    from anemone_bridge import AutoBridge
    bridge = AutoBridge.from_hf_pretrained("path/to/hf_folder")
    with bridge.parallel(tp=2):                         # inside torchrun, or a single process
        model = bridge.to_megatron_model(load_weights=True)
        for name, tensor in bridge.export_hf_weights(model):   # streaming, full tensors on rank 0
            ...
        bridge.save_hf_pretrained(model, "out_folder")

`import_ckpt` / `export_ckpt` (in `convert.py`) launch the processes themselves; use those from scripts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from anemone_bridge.architectures import ArchBridge, bridge_for
from anemone_bridge.hf_config import HFConfig, check_required, read_hf_config
from anemone_bridge.mapping import Geometry
from anemone_bridge.model_builder import build_gpt_model, check_layout, geometry
from anemone_bridge.runtime import Layout, current_layout, parallel_session
from anemone_bridge.weights import export_hf_weights, load_hf_weights


class AutoBridge:
    """A bridge between one HF model folder and megatron-core `GPTModel`s of the same architecture."""

    def __init__(self, hf_path: str | Path, hf_config: HFConfig | Any, arch: ArchBridge) -> None:
        self.hf_path = Path(hf_path)
        self.hf_config = hf_config
        self.arch = arch
        self._layout: Layout | None = None
        self.padded_vocab_size: int | None = None  # pinned when reading a Megatron checkpoint

    @classmethod
    def from_hf_pretrained(cls, path: str | Path) -> AutoBridge:
        """Read an HF folder's config.json (without importing transformers, see `hf_config.py`) and pick the
        architecture's bridge (errors list the supported ones)."""
        config = read_hf_config(path)
        arch = bridge_for(config)
        check_required(config, path)
        return cls(path, config, arch)

    @staticmethod
    def list_supported_models() -> list[dict[str, Any]]:
        from anemone_bridge.architectures import list_supported_models

        return list_supported_models()

    # ---- parallel layout -------------------------------------------------------------------------
    def check_layout(self, tp: int = 1, pp: int = 1, ep: int = 1) -> None:
        check_layout(self.arch, self.hf_config, tp, pp, ep)

    @contextmanager
    def parallel(self, tp: int = 1, pp: int = 1, ep: int = 1) -> Iterator[Layout]:
        """Initialize torch.distributed (torchrun's group, or one process) and megatron's parallel state."""
        self.check_layout(tp, pp, ep)
        with parallel_session(tp, pp, ep) as layout:
            self._layout = layout
            try:
                yield layout
            finally:
                self._layout = None

    def layout(self) -> Layout:
        return self._layout or current_layout()

    def geometry(self) -> Geometry:
        return geometry(self.hf_config, self.layout().tp, self.padded_vocab_size)

    # ---- models and weights ----------------------------------------------------------------------
    def transformer_config(self, tp: int = 1, pp: int = 1, ep: int = 1):
        from anemone_bridge.model_builder import transformer_config

        return transformer_config(self.arch, self.hf_config, tp, pp, ep)

    def to_megatron_model(self, load_weights: bool = True, allow_missing: list[str] | None = None,
                          dtype: torch.dtype = torch.float32):
        """This rank's megatron-core GPTModel at the current parallel layout, optionally with HF weights."""
        lay = self.layout()
        model = build_gpt_model(self.arch, self.hf_config, lay.tp, lay.pp, lay.ep, dtype, self.padded_vocab_size)
        if load_weights:
            self.load_hf_weights(model, allow_missing=allow_missing)
        return model

    def load_hf_weights(self, model: torch.nn.Module, hf_path: str | Path | None = None,
                        allow_missing: list[str] | None = None,
                        gated_parts: dict[int, list[torch.Tensor]] | None = None) -> dict[str, Any]:
        """Fill the model from the HF folder (`gated_parts`: see `weights.load_hf_weights`; for saving only)."""
        return load_hf_weights(model, hf_path or self.hf_path, self.arch, self.hf_config, self.geometry(),
                               self.layout(), allow_missing, gated_parts)

    def export_hf_weights(self, model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        """Stream (HF name, tensor) on rank 0 in table order; every rank must consume it to the end."""
        return export_hf_weights(model, self.arch, self.hf_config, self.geometry(), self.layout())

    def output_dtype(self) -> torch.dtype | None:
        """The checkpoint's own floating dtype (config.json `dtype`): tensors go back in it, since a bf16 model
        is loaded into fp32 Megatron parameters. None: keep the parameters' dtype."""
        dtype = getattr(self.hf_config, "dtype", None)
        dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
        return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else None

    def save_hf_pretrained(self, model: torch.nn.Module, path: str | Path, overwrite: bool = False,
                           max_shard_bytes: int | None = None, tokenizer_from: str | Path | None = None) -> Path:
        """Write an HF folder (config, tokenizer, sharded safetensors) from rank 0, streaming shard by shard."""
        from anemone_bridge.hf_writer import write_hf_folder

        dtype = self.output_dtype()
        stream = self.export_hf_weights(model)
        if dtype is not None:
            stream = ((n, t.to(dtype)) for n, t in stream)
        return write_hf_folder(stream, path, self.hf_config,
                               tokenizer_from=tokenizer_from or self.hf_path, overwrite=overwrite,
                               max_shard_bytes=max_shard_bytes, is_writer=self.layout().rank == 0)
