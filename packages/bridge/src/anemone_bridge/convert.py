"""The public entry points that launch their own processes: `import_ckpt`, `export_ckpt`, `verify`, `roundtrip`.

    from anemone_bridge import import_ckpt, export_ckpt
    import_ckpt("hf_folder", "megatron_ckpt", tp=2)          # 2 ranks over gloo (CPU) or NCCL (GPU)
    export_ckpt("megatron_ckpt", "hf_again")                 # reads any saved TP/PP/EP layout

Every check that can fail (layout against the model, existing outputs) runs before a process starts;
outputs appear whole or not at all.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from anemone_bridge.auto_bridge import AutoBridge
from anemone_bridge.launch import run_job
from anemone_bridge.megatron_ckpt import read_meta
from anemone_core.errors import AnemoneError
from anemone_core.io import atomic_dir
from anemone_core.models import resolve_model


def world_size(tp: int, pp: int, ep: int) -> int:
    """Ranks needed: tp*pp model-parallel ranks times dp = ep (expert groups are carved out of dp)."""
    return tp * pp * ep


def _refuse_existing(out: str | Path, overwrite: bool, flag: str = "--overwrite") -> None:
    if Path(out).expanduser().exists() and not overwrite:
        raise AnemoneError(f"output folder {Path(out).expanduser().absolute()} already exists: choose another path "
                           f"or pass {flag}")


def import_ckpt(hf_path: str | Path | None, out: str | Path, tp: int = 1, pp: int = 1, ep: int = 1,
                overwrite: bool = False, allow_missing: list[str] | None = None, quiet: bool = False) -> dict[str, Any]:
    """HF folder (None: the embedded model) -> Megatron dist checkpoint at (tp, pp, ep), launching tp*pp*ep ranks."""
    hf = resolve_model(None if hf_path is None else str(hf_path))
    bridge = AutoBridge.from_hf_pretrained(hf)
    bridge.check_layout(tp, pp, ep)
    _refuse_existing(out, overwrite)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        result = run_job("import_job", {"hf_path": str(hf), "out": str(tmp), "tp": tp, "pp": pp, "ep": ep,
                                        "allow_missing": allow_missing}, world_size(tp, pp, ep), quiet=quiet)
    result["out"] = str(Path(out).expanduser().absolute())
    return result


def export_ckpt(megatron_path: str | Path, out: str | Path, tp: int = 1, pp: int = 1, ep: int = 1,
                overwrite: bool = False, max_shard_bytes: int | None = None, quiet: bool = False) -> dict[str, Any]:
    """Megatron dist checkpoint (any saved layout) -> HF folder. Loads at (tp, pp, ep), default one process."""
    meta = read_meta(megatron_path)
    bridge = AutoBridge.from_hf_pretrained(Path(megatron_path) / "hf")
    bridge.check_layout(tp, pp, ep)
    if meta["padded_vocab_size"] % tp:
        raise AnemoneError(f"--tp {tp} does not divide the checkpoint's padded vocabulary {meta['padded_vocab_size']}: "
                           f"export at a tp that divides it (e.g. the saved tp={meta['tp']})")
    _refuse_existing(out, overwrite)
    return run_job("export_job", {"megatron_path": str(megatron_path), "out": str(out), "tp": tp, "pp": pp, "ep": ep,
                                  "overwrite": overwrite, "max_shard_bytes": max_shard_bytes},
                   world_size(tp, pp, ep), quiet=quiet)


def verify(hf_path: str | Path | None = None, tp: int = 1, pp: int = 1, ep: int = 1, seq_len: int = 32,
           allow_missing: list[str] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Convert HF -> Megatron at (tp, pp, ep), compare logits with transformers, export back, compare tensors."""
    hf = resolve_model(None if hf_path is None else str(hf_path))
    bridge = AutoBridge.from_hf_pretrained(hf)
    bridge.check_layout(tp, pp, ep)
    if seq_len < 1:
        raise AnemoneError(f"--seq-len {seq_len} is invalid: use a positive number of tokens (default 32)")
    return run_job("verify_job", {"hf_path": str(hf), "tp": tp, "pp": pp, "ep": ep, "seq_len": seq_len,
                                  "allow_missing": allow_missing}, world_size(tp, pp, ep), quiet=quiet)


def roundtrip(hf_path: str | Path | None = None, tp: int = 1, pp: int = 1, ep: int = 1, out: str | Path | None = None,
              overwrite: bool = False, quiet: bool = False) -> dict[str, Any]:
    """import_ckpt at (tp, pp, ep), then export_ckpt in one process (a reshard when tp*pp*ep > 1), then compare
    the HF folder with the source tensor by tensor. Keeps the exported folder only when `out` is given."""
    from anemone_bridge.weights import HFReader

    hf = resolve_model(None if hf_path is None else str(hf_path))
    if out is not None:
        _refuse_existing(out, overwrite)
    with tempfile.TemporaryDirectory(prefix="anemone-roundtrip-") as td:
        mg = Path(td) / "megatron"
        imp = import_ckpt(hf, mg, tp, pp, ep, quiet=quiet)
        hf_out = Path(out) if out is not None else Path(td) / "hf"
        exp = export_ckpt(mg, hf_out, overwrite=overwrite, quiet=quiet)
        src, dst = HFReader(hf), HFReader(hf_out)
        diffs: dict[str, float] = {}
        for name in src.where:
            if name in dst.where:
                a, b = src.get(name), dst.get(name)
                diffs[name] = float((a.double() - b.double()).abs().max()) if a.shape == b.shape else 1e30
        missing, extra = sorted(set(src.where) - set(dst.where)), sorted(set(dst.where) - set(src.where))
        cfg_same = _config_equal(hf, hf_out)
    worst = max(diffs.values()) if diffs else 1e30
    return {"model": str(hf), "tp": tp, "pp": pp, "ep": ep, "import_seconds": imp["seconds"],
            "export_seconds": exp["seconds"], "tensors": len(diffs), "max_abs_diff": worst,
            "missing": missing, "extra": extra, "config_equal": cfg_same,
            "exact": bool(worst == 0.0 and not missing and not extra), "out": str(out) if out else None}


def _config_equal(a: Path, b: Path) -> bool:
    keys = ("architectures", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "vocab_size", "tie_word_embeddings", "rope_parameters", "rms_norm_eps")
    ca, cb = (json.loads((p / "config.json").read_text()) for p in (a, b))
    return all(ca.get(k) == cb.get(k) for k in keys)
