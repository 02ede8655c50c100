"""Exporting a Megatron dist checkpoint in one process without holding the whole model.

The GPTModel is built on the meta device: it gives the checkpoint keys, global offsets and shapes (its
`sharded_state_dict()`, exactly what `import` saved through) without storage. Its parameters are then loaded
from the checkpoint a group of checkpoint keys at a time (megatron-core `dist_checkpointing.load` of that part
of the sharded state dict; it reshards from any saved TP/PP/EP), turned into HF tensors by the table and handed
to the writer, which knows every name and shape in advance (`hf_writer.PlannedShardWriter`) and keeps none.
Memory: one group of Megatron tensors (`chunk_bytes`, or one checkpoint key if larger: see `groups`) plus
one HF tensor being converted, whatever the shard size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from anemone_bridge.hf_writer import PlannedTensor
from anemone_bridge.weights import _names, is_tied_copy, rows_by_name, to_global
from anemone_core.errors import AnemoneError

CHUNK_BYTES = 128 * 1024**2


class CheckpointStream:
    """The HF tensors of a Megatron checkpoint, loaded group by group (one process); `plan()` gives their
    names, shapes and dtypes in the order iteration yields them."""

    def __init__(self, bridge: Any, folder: str | Path, out_dtype: torch.dtype | None = None,
                 chunk_bytes: int = CHUNK_BYTES) -> None:
        from anemone_bridge.model_builder import build_gpt_model

        lay = bridge.layout()
        if lay.world_size != 1:
            raise AssertionError("CheckpointStream runs in one process; more ranks use export_hf_weights")
        self.folder, self.geo, self.out_dtype, self.chunk_bytes = Path(folder), bridge.geometry(), out_dtype, chunk_bytes
        cfg = bridge.hf_config
        model = build_gpt_model(bridge.arch, cfg, 1, 1, 1, padded_vocab_size=bridge.padded_vocab_size, meta=True)
        lps, eps = cfg.num_hidden_layers, max(bridge.arch.num_experts(cfg), 1)
        self.sharded: dict[str, Any] = {}  # global name -> this model's sharded tensor (or factory), on meta
        for local, sh in model.sharded_state_dict().items():
            if not local.endswith("_extra_state"):
                self.sharded[to_global(local, lay, lps, eps)] = (local, sh)
        rows = rows_by_name(bridge.arch, cfg)
        unmapped = sorted(set(self.sharded) - set(rows))
        if unmapped:
            raise AnemoneError(f"{len(unmapped)} Megatron parameter(s) have no mapping in the {bridge.arch.name} "
                               f"table: {_names(unmapped)}; cannot export them")
        self.rows = [(n, r) for n, r in rows.items() if n in self.sharded and not is_tied_copy(n, cfg)]
        self._meta = dict(model.state_dict(keep_vars=True))

    def _shape(self, name: str) -> tuple[torch.Size, torch.dtype]:
        local = self.sharded[name][0]
        return self._meta[local].shape, self._meta[local].dtype

    def plan(self) -> list[PlannedTensor]:
        """Every HF tensor's name, shape and dtype, in stream order (the table's transforms run on meta)."""
        out = []
        for name, row in (r for group in self.groups() for r in group):
            shape, dtype = self._shape(name)
            for hf, t in zip(row.hf, row.to_hf([torch.empty(shape, dtype=dtype, device="meta")], self.geo),
                             strict=True):
                out.append(PlannedTensor(hf, tuple(t.shape), self.out_dtype or t.dtype))
        return out

    def groups(self) -> Iterator[list[tuple[str, Any]]]:
        """Rows grouped by whole checkpoint keys (a key stacks one parameter of every layer), several small
        keys per group up to `chunk_bytes`. Whole keys because megatron-core cannot load part of a stacked key
        in a one-rank world: its torch ShardedTensor then counts the other layers' fragments as local."""
        by_key: dict[str, list[tuple[str, Any]]] = {}
        for name, row in self.rows:
            by_key.setdefault(self.sharded[name][1].key, []).append((name, row))
        group: list[tuple[str, Any]] = []
        size = 0
        for rows in by_key.values():
            nbytes = sum(self._nbytes(name) for name, _ in rows)
            if group and size + nbytes > self.chunk_bytes:
                yield group
                group, size = [], 0
            group += rows
            size += nbytes
        if group:
            yield group

    def _nbytes(self, name: str) -> int:
        shape, dtype = self._shape(name)
        return shape.numel() * torch.empty((), dtype=dtype).element_size()

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        from anemone_bridge.dist_reader import DistCheckpointReader, read_sharded

        reader = DistCheckpointReader(self.folder)
        for group in self.groups():
            request = {}
            for name, _ in group:
                local, sh = self.sharded[name]
                shape, dtype = self._shape(name)
                # fresh CPU storage where the meta model had none; the checkpoint is read into it
                request[local] = dataclasses.replace(sh, data=torch.empty(shape, dtype=dtype))
            state = read_sharded(reader, request, merge=False)
            for name, row in group:
                local, sh = self.sharded[name]
                value = state.pop(local)
                if isinstance(value, list):  # a factory's parts, not merged yet
                    hf_tensors = value if self._gate_up_halves(row, sh) else row.to_hf([sh.merge_fn(value)], self.geo)
                else:
                    hf_tensors = row.to_hf([value], self.geo)
                for hf, t in zip(row.hf, hf_tensors, strict=True):
                    yield hf, (t if self.out_dtype is None else t.to(self.out_dtype))
            del state, request

    def _gate_up_halves(self, row: Any, sh: Any) -> bool:
        """Whether a factory's two parts are the gate and up halves of a `gated` row: megatron-core stores its
        gated MLP weight [gate; up] as two chunks (rows [0, f) and [f, 2f) of the parameter, whose `merge_fn`
        concatenates them), and the table's `to_hf` of [gate; up] in one process is (gate, up). Yielding the
        parts skips the concatenation and the split (one copy of every gated weight: 0.8 s CPU of a 4.2 s
        export of a 1.4 GB model here). Checked on the factory's meta-device parts, not assumed."""
        if row.kind != "gated":
            return False
        parts = sh.build()
        if len(parts) != 2:
            return False
        w, v = parts
        p = w.prepend_axis_num
        return (w.local_shape == v.local_shape and w.global_offset[p] == 0 and v.global_offset[p] == w.local_shape[0]
                and w.global_offset[:p] == v.global_offset[:p] and w.key == v.key)
