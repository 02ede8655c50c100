"""ONNX export of a decoder with KV-cache inputs and outputs (prefill and decode in one graph), validated in
ONNX Runtime against the source model: max |logit diff| on fixed prompts (prefill), the same after decode
steps fed back through the cache, and greedy-token agreement of a short generation.

The legacy TorchScript exporter (`dynamo=False`) is used: its file decodes ~2.7x faster in ONNX Runtime than
the dynamo exporter's, which transposes the tied head at run time (FACTS.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from anemone_core.errors import require
from anemone_core.io import atomic_dir
from anemone_export.kv_model import KVLayout, KVStepModel
from anemone_export.sources import Source
from anemone_export.validate import Report, reference_logits, validation_prompts

MODEL_FILE = "model.onnx"


def export_onnx_file(model: torch.nn.Module, path: Path, opset: int = 17) -> KVLayout:
    """Trace `model` (HF causal LM, fp32) with a P>0 cache and T>1 so neither axis is specialised."""
    step = KVStepModel(model).eval()
    lay = step.layout
    batch, new, past = 2, 3, 2
    ids = torch.randint(0, lay.vocab, (batch, new))
    mask = torch.ones(batch, past + new, dtype=torch.long)
    pos = torch.arange(past, past + new).expand(batch, new)
    cache = [torch.randn(batch, lay.kv_heads, past, lay.head_dim) for _ in range(2 * lay.layers)]
    dyn: dict[str, dict[int, str]] = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"},
                                      "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    dyn |= {n: {0: "batch", 2: "past"} for n in lay.past_names()}
    dyn |= {n: {0: "batch", 2: "total"} for n in lay.present_names()}
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python branches on shapes we keep dynamic
        torch.onnx.export(step, (ids, mask, pos, *cache), str(path),
                          input_names=["input_ids", "attention_mask", "position_ids", *lay.past_names()],
                          output_names=["logits", *lay.present_names()], dynamic_axes=dyn,
                          opset_version=opset, dynamo=False, external_data=False)
    return lay


class OnnxStep:
    """ONNX Runtime session with the KVStepModel signature (numpy in, torch out), for validation and serving."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        ort = require("onnxruntime", "uv pip install onnxruntime", "running an ONNX model")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        meta = json.loads((Path(path).parent / "anemone_onnx.json").read_text())
        self.layout = KVLayout(**meta["layout"])

    def __call__(self, input_ids, attention_mask, position_ids, *past):
        feed = {"input_ids": _np(input_ids, np.int64), "attention_mask": _np(attention_mask, np.int64),
                "position_ids": _np(position_ids, np.int64)}
        feed |= {n: _np(t, np.float32) for n, t in zip(self.layout.past_names(), past, strict=True)}
        outs = self.session.run(None, feed)
        return tuple(torch.from_numpy(o) for o in outs)


def _np(t, dtype) -> np.ndarray:
    return t.numpy().astype(dtype, copy=False) if isinstance(t, torch.Tensor) else np.asarray(t, dtype=dtype)


def validate_onnx(step, source: Source, report: Report, *, atol: float, min_agreement: float,
                  decode_steps: int = 8) -> None:
    """Prefill each fixed prompt in ONNX Runtime, then decode greedily through the cache, comparing with torch."""
    prompts = validation_prompts(source.tokenizer)
    ref = reference_logits(source.model, prompts)
    lay = step.layout
    prefill_diff, decode_diff, agree, total = 0.0, 0.0, 0, 0
    for ids, r in zip(prompts, ref, strict=True):
        n = len(ids)
        outs = step(torch.tensor([ids]), torch.ones(1, n, dtype=torch.long), torch.arange(n)[None], *lay.empty(1))
        prefill_diff = max(prefill_diff, (outs[0][0] - r).abs().max().item())
        agree += int((outs[0][0].argmax(-1) == r.argmax(-1)).sum())
        total += n
        # Decode: feed the torch model's greedy tokens through the ONNX cache; compare each step's logits.
        seq, cache = list(ids), list(outs[1:])
        nxt = int(r[-1].argmax())
        for _ in range(decode_steps):
            seq.append(nxt)
            t = len(seq)
            o = step(torch.tensor([[nxt]]), torch.ones(1, t, dtype=torch.long), torch.tensor([[t - 1]]), *cache)
            cache = list(o[1:])
            with torch.no_grad():
                want = source.model(input_ids=torch.tensor([seq])).logits[0, -1].float()
            decode_diff = max(decode_diff, (o[0][0, -1] - want).abs().max().item())
            agree += int(o[0][0, -1].argmax() == want.argmax())
            total += 1
            nxt = int(want.argmax())
    report.add("prefill max |logit diff|", prefill_diff, f"<= {atol:g} (--atol)", prefill_diff <= atol)
    report.add("decode max |logit diff|", decode_diff, f"<= {atol:g} (--atol)", decode_diff <= atol)
    rate = agree / max(total, 1)
    report.add("greedy agreement", rate, f">= {min_agreement:g} (--min-agreement)", rate >= min_agreement)
    report.add("prompts x positions", f"{len(prompts)} x {total}", "fixed prompts incl. chat template", True)


def export_onnx(source: Source, out: Path, *, atol: float = 5e-4, min_agreement: float = 0.99, opset: int = 17,
                overwrite: bool = False) -> Report:
    """Write `out/model.onnx` + tokenizer + `anemone_onnx.json`; only if validation passes."""
    report = Report(f"ONNX {out}")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        lay = export_onnx_file(source.model, tmp / MODEL_FILE, opset=opset)
        meta = {"format": "anemone-onnx-kv/1", "source": source.description, "opset": opset,
                "layout": lay.__dict__, "inputs": ["input_ids", "attention_mask", "position_ids", *lay.past_names()],
                "outputs": ["logits", *lay.present_names()],
                "max_position_embeddings": getattr(source.model.config, "max_position_embeddings", None)}
        (tmp / "anemone_onnx.json").write_text(json.dumps(meta, indent=2))
        source.tokenizer.save_pretrained(tmp)
        source.model.config.save_pretrained(tmp)
        validate_onnx(OnnxStep(tmp / MODEL_FILE), source, report, atol=atol, min_agreement=min_agreement)
        report.add("file size (MB)", round((tmp / MODEL_FILE).stat().st_size / 1e6, 1), "single file", True)
        (tmp / "validation.json").write_text(json.dumps(report.as_dict(), indent=2))
        report.raise_if_failed()
    return report
