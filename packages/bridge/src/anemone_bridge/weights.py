"""Moving weights between an HF folder and a (TP/PP/EP-sharded) megatron-core model, with the table.

Naming: a *local* Megatron name is what this rank's `GPTModel.state_dict()` holds (`decoder.layers.0` on
every pipeline stage, `local_experts.0` on every expert rank); a *global* name numbers layers and experts
across the whole model and is what the tables (`architectures.py`) speak. PP ownership and EP renaming are
this translation; TP scatter/gather is `Mapping.to_megatron` / `Mapping.to_hf`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from anemone_bridge.architectures import ArchBridge
from anemone_bridge.mapping import Geometry, Mapping, matches_any
from anemone_bridge.runtime import Layout, all_gather_object, send_to
from anemone_core.checkpoint import weight_files
from anemone_core.errors import AnemoneError

_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.")
_EXPERT = re.compile(r"\.local_experts\.(\d+)\.")


def rows_by_name(arch: ArchBridge, hf_config: Any) -> dict[str, Mapping]:
    """Global Megatron name -> table row, for this model (tied embeddings handled here)."""
    rows = arch.table.expand(hf_config.num_hidden_layers, arch.num_experts(hf_config))
    out = {}
    for row in rows:
        if row.megatron == "output_layer.weight" and getattr(hf_config, "tie_word_embeddings", False):
            # the last pipeline stage's copy of the tied embedding (exists only when pp > 1)
            row = Mapping(row.megatron, ("model.embed_tokens.weight",), row.kind)
        out[row.megatron] = row
    return out


def is_tied_copy(name: str, hf_config: Any) -> bool:
    return name == "output_layer.weight" and bool(getattr(hf_config, "tie_word_embeddings", False))


# The Transformer Engine spec fuses the pre-attention / pre-MLP RMSNorm into the next linear layer; its
# parameters get the local spec's names, so one table serves both specs.
TE_ALIASES = {
    ".self_attention.linear_qkv.layer_norm_weight": ".input_layernorm.weight",
    ".mlp.linear_fc1.layer_norm_weight": ".pre_mlp_layernorm.weight",
}


def to_global(local: str, layout: Layout, layers_per_stage: int, experts_per_rank: int) -> str:
    for te, plain in TE_ALIASES.items():
        if local.endswith(te):
            local = local[: -len(te)] + plain
    name = _LAYER.sub(lambda m: f"decoder.layers.{layout.pp_rank * layers_per_stage + int(m.group(1))}.", local)
    return _EXPERT.sub(lambda m: f".local_experts.{layout.ep_rank * experts_per_rank + int(m.group(1))}.", name)


def local_params(model: torch.nn.Module, layout: Layout, hf_config: Any, arch: ArchBridge) -> dict[str, torch.Tensor]:
    """This rank's tensors under their global names (extra state and non-persistent buffers skipped)."""
    lps = hf_config.num_hidden_layers // layout.pp
    eps = max(arch.num_experts(hf_config) // layout.ep, 1)
    out = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if name.endswith("_extra_state") or tensor is None:
            continue
        out[to_global(name, layout, lps, eps)] = tensor
    return out


class HFReader:
    """Random access to the tensors of an HF folder's safetensors shards (headers read once, data on demand)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.where: dict[str, Path] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        for path in weight_files(self.folder):
            try:
                with safe_open(str(path), framework="pt") as fh:
                    for key in fh.keys():
                        self.where[key] = path
                        self.shapes[key] = tuple(fh.get_slice(key).get_shape())
            except (SafetensorError, OSError) as exc:
                raise AnemoneError(f"cannot read '{path}': {exc}. The safetensors file is corrupt or truncated: "
                                   "re-download or re-save it") from None
        self._open: dict[Path, Any] = {}

    def get(self, name: str) -> torch.Tensor:
        path = self.where[name]
        try:
            if path not in self._open:
                self._open[path] = safe_open(str(path), framework="pt")
            return self._open[path].get_tensor(name)
        except (SafetensorError, OSError) as exc:
            raise AnemoneError(f"cannot read tensor '{name}' from '{path}': {exc}. The file is corrupt or "
                               "truncated: re-download or re-save it") from None

    def close(self) -> None:
        self._open.clear()


def _names(names: list[str], limit: int = 12) -> str:
    more = f" ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


@torch.no_grad()
def load_hf_weights(model: torch.nn.Module, hf_folder: str | Path, arch: ArchBridge, hf_config: Any,
                    geo: Geometry, layout: Layout, allow_missing: list[str] | None = None,
                    gated_parts: dict[int, list[torch.Tensor]] | None = None) -> dict[str, Any]:
    """Fill this rank's parameters from the HF folder. Every Megatron parameter must be mapped and every HF
    tensor used by some rank (checked across ranks), except names matching `allow_missing` globs.

    With `gated_parts` (a dict to fill; for a model that is only saved) tensors are not copied where they can
    be aliased (`_fill`), and a `gated` parameter is not filled: its two halves
    (this TP rank's gate and up rows, as they are in the HF files) go into the dict under the parameter's
    `data_ptr()`, for `megatron_ckpt.save_megatron`, which saves the halves as megatron-core does (as two
    chunks) without ever concatenating them."""
    allow = allow_missing or []
    reader = HFReader(hf_folder)
    rows = rows_by_name(arch, hf_config)
    params = local_params(model, layout, hf_config, arch)
    unmapped = sorted(n for n in params if n not in rows and not matches_any(n, allow))
    if unmapped:
        raise AnemoneError(f"{len(unmapped)} Megatron parameter(s) have no mapping in the {arch.name} table: "
                           f"{_names(unmapped)}; this is a bridge bug, or pass --allow-missing GLOB to skip them")
    used: set[str] = set()
    missing_hf: list[str] = []
    for name, param in params.items():
        row = rows.get(name)
        if row is None:
            continue
        absent = [h for h in row.hf if h not in reader.where]
        if absent:
            if not matches_any(name, allow):
                missing_hf += absent
            continue
        hf_tensors = [reader.get(h) for h in row.hf]
        if gated_parts is not None and row.kind == "gated" and param.device.type == "cpu":
            halves = [t.chunk(layout.tp, 0)[layout.tp_rank].to(param.dtype) for t in hf_tensors]
            if tuple(halves[0].shape) != tuple(halves[1].shape) or 2 * halves[0].shape[0] != param.shape[0] \
                    or tuple(halves[0].shape[1:]) != tuple(param.shape[1:]):
                raise AnemoneError(f"HF tensor(s) {list(row.hf)} give halves of shape {tuple(halves[0].shape)} and "
                                   f"{tuple(halves[1].shape)} for Megatron '{name}', which expects "
                                   f"{tuple(param.shape)}: config.json does not match the weights")
            gated_parts[param.data_ptr()] = halves
            used.update(row.hf)
            continue
        shard = row.to_megatron(hf_tensors, geo, layout.tp_rank, layout.tp)
        if tuple(shard.shape) != tuple(param.shape):
            raise AnemoneError(f"HF tensor(s) {list(row.hf)} give shape {tuple(shard.shape)} for Megatron "
                               f"'{name}', which expects {tuple(param.shape)}: config.json does not match the weights")
        _fill(param, shard, alias=gated_parts is not None)
        used.update(row.hf)
    reader.close()
    if missing_hf:
        raise AnemoneError(f"{len(missing_hf)} HF tensor(s) needed by the {arch.name} table are not in "
                           f"{hf_folder}: {_names(sorted(set(missing_hf)))}; the checkpoint is incomplete, or pass "
                           "--allow-missing GLOB (Megatron names) to leave them uninitialized")
    all_used = set().union(*all_gather_object(sorted(used)))
    unused = sorted(n for n in reader.where if n not in all_used and not matches_any(n, allow))
    if unused:
        raise AnemoneError(f"{len(unused)} HF tensor(s) in {hf_folder} are not used by any Megatron parameter: "
                           f"{_names(unused)}; a silent partial conversion is refused. Pass --allow-missing GLOB "
                           "to accept dropping them")
    return {"loaded": len(params), "hf_tensors": len(reader.where)}


def _fill(param: torch.Tensor, shard: torch.Tensor, alias: bool = False) -> None:
    """Make `param` hold `shard`'s values; with `alias`, without a copy where possible.

    With `alias` (a model built only to be saved: `import`), a shard that is contiguous and owns exactly its
    storage (a whole safetensors tensor, mapped from the file copy-on-write, or a tensor the table just built)
    becomes the parameter's data: the untouched allocation is dropped and nothing is copied (a copy of the
    model was 5 s of a 13 s import of a 1.4 GB model here). torch DCP saves such a tensor as is; a view into a
    larger storage (a TP chunk) it would clone, so those are copied as before. Without `alias` (a model the
    caller keeps) every value is copied, so the parameters never depend on the HF files staying unchanged
    (a file rewritten in place under a mapping changes or, if truncated, faults the mapped pages)."""
    shard = shard.to(param.dtype)
    owns_storage = shard.storage_offset() == 0 and shard.untyped_storage().nbytes() == shard.nbytes
    if alias and shard.device == param.device and shard.is_contiguous() and owns_storage:
        param.data = shard
    else:
        param.data.copy_(shard)


@torch.no_grad()
def export_hf_weights(model: torch.nn.Module, arch: ArchBridge, hf_config: Any, geo: Geometry,
                      layout: Layout) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (HF name, full tensor) on global rank 0, one table row at a time, in table order. Every rank
    must iterate it to the end (the others send their shards to rank 0 and yield nothing)."""
    params = local_params(model, layout, hf_config, arch)
    meta = all_gather_object((layout.tp_rank, {n: (tuple(t.shape), str(t.dtype)) for n, t in params.items()}))
    rows = rows_by_name(arch, hf_config)
    held = {n for _, names in meta for n in names}
    unmapped = sorted(held - set(rows))
    if unmapped:
        raise AnemoneError(f"{len(unmapped)} Megatron parameter(s) have no mapping in the {arch.name} table: "
                           f"{_names(unmapped)}; cannot export them")
    for name, row in rows.items():
        if is_tied_copy(name, hf_config) or name not in held:
            continue  # the tied head is the embedding; an absent row is e.g. the head of a tied pp=1 model
        shards = []
        for t in range(layout.tp if row.tp_dim is not None else 1):
            src = min(r for r, (tpr, names) in enumerate(meta) if tpr == t and name in names)
            shape, dtype = meta[src][1][name]
            mine = params[name].detach() if layout.rank == src else None
            got = send_to(mine, src, 0, shape, getattr(torch, dtype.split(".")[-1]))  # type: ignore[arg-type]
            if layout.rank == 0:
                shards.append(got)
        if layout.rank == 0:
            yield from zip(row.hf, row.to_hf(shards, geo), strict=True)
