"""What each rank runs for `import`, `export` and `verify` (started by `launch.run_job`, 1 or N ranks).

Each job is a plain function of JSON-able arguments, returning a JSON-able summary on rank 0.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch

from anemone_bridge.auto_bridge import AutoBridge
from anemone_bridge.megatron_ckpt import load_megatron, read_meta, save_megatron
from anemone_core.checkpoint import copy_tokenizer_files
from anemone_core.metrics import progress


def import_job(hf_path: str, out: str, tp: int = 1, pp: int = 1, ep: int = 1,
               allow_missing: list[str] | None = None) -> dict[str, Any]:
    """HF folder -> Megatron dist checkpoint written into `out` (a folder the caller made and will rename)."""
    t0 = time.perf_counter()
    bridge = AutoBridge.from_hf_pretrained(hf_path)
    with bridge.parallel(tp, pp, ep) as lay:
        model = bridge.to_megatron_model(load_weights=False)
        gated: dict[int, list[torch.Tensor]] = {}  # gated MLP weights stay as their gate and up halves
        bridge.load_hf_weights(model, allow_missing=allow_missing, gated_parts=gated)
        geo = bridge.geometry()
        meta = {"architecture": bridge.arch.name, "tp": tp, "pp": pp, "ep": ep,
                "vocab_size": geo.vocab_size, "padded_vocab_size": geo.padded_vocab_size, "source": str(hf_path)}
        save_megatron(model, out, meta, gated)  # first: megatron warns about a non-empty folder otherwise
        if lay.rank == 0:
            (Path(out) / "hf").mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(hf_path) / "config.json", Path(out) / "hf" / "config.json")
            copy_tokenizer_files(hf_path, Path(out) / "hf")
        params = sum(p.numel() for p in model.parameters())
    return {**meta, "out": str(out), "parameters_rank0": params, "seconds": round(time.perf_counter() - t0, 2)}


def export_job(megatron_path: str, out: str, tp: int = 1, pp: int = 1, ep: int = 1, overwrite: bool = False,
               max_shard_bytes: int | None = None, chunk_bytes: int | None = None) -> dict[str, Any]:
    """Megatron dist checkpoint (any saved layout) -> HF folder, loading it at (tp, pp, ep).

    In one process (the default) the checkpoint is streamed group by group into the files without building
    the model (`export_stream.py`; `chunk_bytes` of Megatron tensors at a time); with more ranks each loads
    its part of the model and sends its shards to rank 0 (`weights.export_hf_weights`)."""
    t0 = time.perf_counter()
    meta = read_meta(megatron_path)
    bridge = AutoBridge.from_hf_pretrained(Path(megatron_path) / "hf")
    bridge.padded_vocab_size = meta["padded_vocab_size"]
    tokenizer_from = Path(megatron_path) / "hf"
    with bridge.parallel(tp, pp, ep) as lay:
        if lay.world_size == 1:
            from anemone_bridge.export_stream import CHUNK_BYTES, CheckpointStream
            from anemone_bridge.hf_writer import write_hf_folder

            stream = CheckpointStream(bridge, megatron_path, bridge.output_dtype(), chunk_bytes or CHUNK_BYTES)
            write_hf_folder(stream, out, bridge.hf_config, tokenizer_from=tokenizer_from, overwrite=overwrite,
                            max_shard_bytes=max_shard_bytes, plan=stream.plan())
        else:
            model = bridge.to_megatron_model(load_weights=False)
            load_megatron(model, megatron_path)
            bridge.save_hf_pretrained(model, out, overwrite=overwrite, max_shard_bytes=max_shard_bytes,
                                      tokenizer_from=tokenizer_from)
    return {"architecture": bridge.arch.name, "saved_layout": {k: meta[k] for k in ("tp", "pp", "ep")},
            "load_layout": {"tp": tp, "pp": pp, "ep": ep}, "out": str(out),
            "seconds": round(time.perf_counter() - t0, 2)}


def sample_tokens(hf_path: str | Path, vocab_size: int, seq_len: int = 32, seed: int = 0) -> torch.Tensor:
    """Two rows (B=2, S=seq_len): a tokenized English sentence when the folder has a tokenizer, and random ids."""
    gen = torch.Generator().manual_seed(seed)
    rows = [torch.randint(0, vocab_size, (seq_len,), generator=gen)]
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(hf_path), local_files_only=True)
        text = ("The capital of France is Paris. Large language models are trained on text, and a checkpoint "
                "converter must keep every weight exactly. 12 + 34 = 46. ") * 4
        ids = [i for i in tok(text)["input_ids"] if i < vocab_size][:seq_len]
        if len(ids) == seq_len:
            rows.insert(0, torch.tensor(ids))
    except (OSError, ValueError):
        pass
    return torch.stack(rows[:2]) if len(rows) >= 2 else torch.stack([rows[0], rows[0].flip(0)])


def compare_logits(ours: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Per-position argmax agreement, cosine similarity (min and mean) and max |diff| of (B, S, V) logits."""
    ours, ref = ours.double(), ref.double()
    cos = torch.nn.functional.cosine_similarity(ours, ref, dim=-1)  # (B, S)
    return {
        "argmax_agreement": float((ours.argmax(-1) == ref.argmax(-1)).double().mean()),
        "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
        "max_abs_diff": float((ours - ref).abs().max()),
    }


def verify_job(hf_path: str, tp: int = 1, pp: int = 1, ep: int = 1, seq_len: int = 32,
               allow_missing: list[str] | None = None) -> dict[str, Any]:
    """HF -> Megatron at (tp, pp, ep); logits of both on the same tokens; then the export round trip."""
    t0 = time.perf_counter()
    bridge = AutoBridge.from_hf_pretrained(hf_path)
    report: dict[str, Any] = {"model": str(hf_path), "architecture": bridge.arch.name, "tp": tp, "pp": pp, "ep": ep}
    with bridge.parallel(tp, pp, ep) as lay:
        model = bridge.to_megatron_model(load_weights=True, allow_missing=allow_missing)
        ids = sample_tokens(hf_path, bridge.hf_config.vocab_size, seq_len)
        ours = _megatron_logits(model, ids, bridge.hf_config.vocab_size)
        if lay.rank == 0:
            report["tokens"] = int(ids.numel())
            report.update(compare_logits(ours, _hf_logits(hf_path, ids)))
        report["roundtrip"] = roundtrip_report(bridge, model, lay.rank == 0)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    report["ok"] = bool(report.get("argmax_agreement") == 1.0 and report.get("cosine_min", 0) >= 0.9999
                        and report["roundtrip"].get("exact"))
    return report


def _megatron_logits(model: Any, ids: torch.Tensor, vocab_size: int) -> torch.Tensor | None:
    from anemone_bridge.model_builder import forward_logits

    return forward_logits(model, ids, vocab_size)


def _hf_logits(hf_path: str | Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(str(hf_path), dtype=torch.float32, local_files_only=True).eval()
    with torch.no_grad():
        logits = ref(ids).logits  # (B, S, V)
    del ref
    return logits


def roundtrip_report(bridge: AutoBridge, model: Any, is_main: bool) -> dict[str, Any]:
    """Export the model back and compare tensor by tensor with the source folder (rank 0 reports)."""
    from anemone_bridge.weights import HFReader

    reader = HFReader(bridge.hf_path) if is_main else None
    per_tensor: dict[str, float] = {}
    dtype_mismatch: list[str] = []
    extra: list[str] = []
    stream = bridge.export_hf_weights(model)
    for name, tensor in progress(stream, total=None, description="round trip", disable=not is_main):
        if reader is None or name not in reader.where:
            extra.append(name)
            continue
        orig = reader.get(name)
        if orig.dtype != tensor.dtype:
            dtype_mismatch.append(name)
        same_shape = orig.shape == tensor.shape
        # a shape mismatch counts as an unbounded difference (reported as 1e30 to keep the JSON valid)
        per_tensor[name] = float((orig.double() - tensor.to(orig.dtype).double()).abs().max()) if same_shape else 1e30
    if reader is None:
        return {}
    missing = sorted(set(reader.where) - set(per_tensor))
    worst = max(per_tensor.values()) if per_tensor else 1e30
    return {"tensors": len(reader.where), "exported": len(per_tensor) + len(extra), "max_abs_diff": worst,
            "exact": bool(worst == 0.0 and not missing and not extra), "missing": missing, "extra": extra,
            "dtype_changed": dtype_mismatch, "per_tensor": per_tensor}
