"""HF/vLLM folder export: the merged (LoRA) model cast to a serving dtype, sharded safetensors, the tokenizer and
chat template kept, generation config kept; validated by reloading the written folder with transformers."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from anemone_core.errors import AnemoneError
from anemone_core.io import atomic_dir
from anemone_export.sources import DTYPES, Source
from anemone_export.validate import Report, compare_logits, reference_logits, validation_prompts

# Default (max |logit diff|, greedy agreement) per dtype; the reloaded folder runs in fp32 on CPU.
DEFAULT_THRESHOLDS = {"float32": (1e-4, 1.0), "float16": (0.25, 0.95), "bfloat16": (1.5, 0.9)}


def export_hf(source: Source, out: Path, *, dtype: str = "bfloat16", max_shard_size: str = "2GB",
              atol: float | None = None, min_agreement: float | None = None, overwrite: bool = False) -> Report:
    """Write a self-contained HF folder that transformers and vLLM load directly."""
    import transformers

    if dtype not in DTYPES:
        raise AnemoneError(f"--dtype {dtype!r} is not supported: choose one of {', '.join(DTYPES)}")
    d_atol, d_agree = DEFAULT_THRESHOLDS[dtype]
    atol = d_atol if atol is None else atol
    min_agreement = d_agree if min_agreement is None else min_agreement
    report = Report(f"HF folder {out} ({dtype})")
    prompts = validation_prompts(source.tokenizer)
    ref = reference_logits(source.model, prompts)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        cast = copy.deepcopy(source.model).to(DTYPES[dtype])  # the source stays the untouched fp32 reference
        cast.save_pretrained(tmp, safe_serialization=True, max_shard_size=max_shard_size)
        del cast
        source.tokenizer.save_pretrained(tmp)
        reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        tok = transformers.AutoTokenizer.from_pretrained(tmp)
        compare_logits(report, ref, reference_logits(reloaded, prompts), atol=atol, min_agreement=min_agreement)
        saved = json.loads((tmp / "config.json").read_text())
        stored = saved.get("dtype") or saved.get("torch_dtype")
        report.add("config dtype", stored, f"== {dtype}", stored == dtype)
        same = tok.chat_template == source.tokenizer.chat_template
        report.add("chat template", "kept" if same else "lost", "equal to the source's", same)
        report.add("tokenizer", f"{len(tok)} tokens", "same ids on the fixed prompts",
                   validation_prompts(tok) == prompts)
        shards = sorted(p.name for p in tmp.glob("*.safetensors"))
        report.add("safetensors shards", len(shards), ">= 1", len(shards) >= 1)
        (tmp / "anemone_export.json").write_text(json.dumps(
            {"source": source.description, "dtype": dtype, "validation": report.as_dict()}, indent=2))
        report.raise_if_failed()
    return report
