"""GGUF export (f32, f16, q8_0, q4_0, q4_1) with the `gguf` package, the way llama.cpp's converter lays it out:
a declarative tensor-name table, Llama's Q/K row permutation, the BPE vocabulary, merges, special tokens and the
chat template in the metadata. Validated by an independent reader (transformers' GGUF loader dequantizes the
file back into a torch model and tokenizer): logits on fixed prompts, greedy agreement, token ids, template.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from anemone_core.errors import AnemoneError, require
from anemone_core.io import atomic_dir
from anemone_export.sources import Source
from anemone_export.validate import Report, compare_logits, reference_logits, validation_prompts

# HF model_type -> GGUF architecture (mistral is a llama in llama.cpp); which ones get the Q/K permutation.
ARCHS = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
PERMUTE_QK = {"llama"}
# HF tensor name (regex) -> GGUF tensor name; `{i}` is the layer index.
TENSOR_NAMES = [
    (r"model\.embed_tokens\.weight", "token_embd.weight"),
    (r"model\.norm\.weight", "output_norm.weight"),
    (r"lm_head\.weight", "output.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", "blk.{i}.attn_norm.weight"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", "blk.{i}.ffn_norm.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)", "blk.{i}.attn_q.{p}"),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)", "blk.{i}.attn_k.{p}"),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)", "blk.{i}.attn_v.{p}"),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight", "blk.{i}.attn_output.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.q_norm\.weight", "blk.{i}.attn_q_norm.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.k_norm\.weight", "blk.{i}.attn_k_norm.weight"),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", "blk.{i}.ffn_gate.weight"),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.weight", "blk.{i}.ffn_up.weight"),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", "blk.{i}.ffn_down.weight"),
]
# Tensor type -> (GGML type name, llama.cpp file type id). Norms and biases always stay f32, as in llama.cpp.
TYPES = {"f32": ("F32", 0), "f16": ("F16", 1), "q4_0": ("Q4_0", 2), "q4_1": ("Q4_1", 3), "q8_0": ("Q8_0", 7)}
# Default validation thresholds (max |logit diff|, greedy agreement) per type, measured on the embedded model.
# Embedded model, measured: f32 0 / 1.0, f16 0.041 / 1.0, q8_0 1.3 / 0.97, q4_1 12.8 / 0.90, q4_0 20.5 / 0.66.
DEFAULT_THRESHOLDS = {"f32": (1e-3, 0.99), "f16": (0.25, 0.95), "q8_0": (3.0, 0.9), "q4_1": (30.0, 0.75),
                      "q4_0": (40.0, 0.55)}


def gguf_name(hf_name: str) -> str:
    for pattern, target in TENSOR_NAMES:
        m = re.fullmatch(pattern, hf_name)
        if m:
            groups = m.groups()
            i = groups[0] if groups else ""
            p = groups[1] if len(groups) > 1 else "weight"
            return target.format(i=i, p=p)
    raise AnemoneError(f"tensor '{hf_name}' has no GGUF name in anemone-export's table: this architecture is not "
                       f"supported for GGUF export (supported: {', '.join(sorted(ARCHS))})")


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half RoPE layout -> llama.cpp's interleaved one (rows of each head reordered)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tokenizer_metadata(writer, source: Source, vocab_size: int, tmp: Path) -> None:
    gguf = require("gguf", "uv pip install gguf", "writing GGUF files")
    tok = source.tokenizer
    tok_dir = tmp / "tokenizer"
    tok.save_pretrained(tok_dir)
    data = json.loads((tok_dir / "tokenizer.json").read_text())
    if data.get("model", {}).get("type") != "BPE":
        raise AnemoneError(f"tokenizer model {data.get('model', {}).get('type')!r} is not supported for GGUF export: "
                           "only byte-level BPE tokenizers (gpt2 style) are written")
    vocab: dict[str, int] = dict(data["model"]["vocab"])
    added = {t["content"]: t for t in data.get("added_tokens", [])}
    for content, t in added.items():
        vocab[content] = t["id"]
    by_id = {i: s for s, i in vocab.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in by_id:
            s = by_id[i]
            tokens.append(s)
            if s in added:
                types.append(gguf.TokenType.CONTROL if added[s].get("special") else gguf.TokenType.USER_DEFINED)
            else:
                types.append(gguf.TokenType.NORMAL)
        else:  # the embedding is padded beyond the tokenizer
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2" if source.model.config.model_type.startswith("qwen") else "smollm")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(tok_dir, load_merges=True, n_vocab=vocab_size)
    if tok.chat_template and not special.chat_template:
        special.chat_template = tok.chat_template
    special.add_to_gguf(writer, quiet=True)


def write_gguf(source: Source, path: Path, qtype: str, tmp: Path) -> dict[str, int]:
    """Write `source` to `path`; returns a count of tensors per stored type."""
    gguf = require("gguf", "uv pip install gguf", "writing GGUF files")
    cfg = source.model.config
    arch = ARCHS.get(cfg.model_type)
    if arch is None:
        raise AnemoneError(f"model_type '{cfg.model_type}' is not supported for GGUF export: supported are "
                           f"{', '.join(sorted(ARCHS))}; export an HF folder (`anemone export hf`) instead")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(Path(str(source.folder)).name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    if arch == "qwen3":
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    rope = getattr(cfg, "rope_parameters", None) or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    ggml_name, file_type = TYPES[qtype]
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _tokenizer_metadata(writer, source, cfg.vocab_size, tmp)

    qt = gguf.GGMLQuantizationType[ggml_name]
    block = gguf.GGML_QUANT_SIZES[qt][0]
    counts: dict[str, int] = {}
    state = source.model.state_dict()
    for name, tensor in state.items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # tied: llama.cpp reuses token_embd
        w = tensor.detach().float().numpy()
        if arch in PERMUTE_QK and name.endswith("q_proj.weight"):
            w = permute_qk(w, cfg.num_attention_heads)
        elif arch in PERMUTE_QK and name.endswith("k_proj.weight"):
            w = permute_qk(w, cfg.num_key_value_heads)
        target = gguf_name(name)
        if w.ndim == 1 or qtype == "f32":
            writer.add_tensor(target, w.astype(np.float32))
            kind = "F32"
        elif qtype == "f16" or w.shape[-1] % block:
            writer.add_tensor(target, w.astype(np.float16))  # rows not a multiple of the block: f16
            kind = "F16"
        else:
            writer.add_tensor(target, gguf.quants.quantize(w, qt), raw_dtype=qt)
            kind = ggml_name
        counts[kind] = counts.get(kind, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return counts


def validate_gguf(path: Path, source: Source, report: Report, *, atol: float, min_agreement: float) -> None:
    """Read the file back with transformers' GGUF loader (an independent implementation) and compare."""
    transformers = require("transformers", "uv pip install transformers", "validating GGUF files")
    prompts = validation_prompts(source.tokenizer)
    ref = reference_logits(source.model, prompts)
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    got = reference_logits(model.eval(), prompts)
    compare_logits(report, ref, got, atol=atol, min_agreement=min_agreement)
    from anemone_export.validate import PLAIN_PROMPTS

    same = all(tok(p, add_special_tokens=False)["input_ids"] == source.tokenizer(p, add_special_tokens=False)["input_ids"]
               for p in PLAIN_PROMPTS)
    report.add("token ids (reader vs source)", "equal" if same else "differ", "equal on fixed prompts", same)
    want = source.tokenizer.chat_template
    have = getattr(tok, "chat_template", None)
    report.add("chat template", "kept" if have == want else ("missing" if not have else "differs"),
               "equal to the source's", have == want)


def export_gguf(source: Source, out: Path, qtype: str = "f16", *, atol: float | None = None,
                min_agreement: float | None = None, overwrite: bool = False) -> Report:
    """Write one validated GGUF file at `out` (atomically: only a file that passed appears)."""
    if qtype not in TYPES:
        raise AnemoneError(f"--type {qtype!r} is not a supported GGUF type: choose one of {', '.join(TYPES)}")
    d_atol, d_agree = DEFAULT_THRESHOLDS[qtype]
    atol = d_atol if atol is None else atol
    min_agreement = d_agree if min_agreement is None else min_agreement
    out = Path(out)
    if out.exists() and not overwrite:
        raise AnemoneError(f"output file {out} already exists: choose another --out or pass --overwrite")
    report = Report(f"GGUF {qtype} {out}")
    # Write and validate inside a temporary folder beside `out`, then move only the file into place.
    with atomic_dir(out.with_name(f".{out.name}.work"), overwrite=True) as tmp:
        path = tmp / out.name
        counts = write_gguf(source, path, qtype, tmp)
        validate_gguf(path, source, report, atol=atol, min_agreement=min_agreement)
        report.add("tensor types", ", ".join(f"{k}:{v}" for k, v in sorted(counts.items())), "norms stay F32", True)
        report.add("file size (MB)", round(path.stat().st_size / 1e6, 1), "", True)
        report.raise_if_failed()
        path.replace(out)
    import shutil

    shutil.rmtree(out.with_name(f".{out.name}.work"), ignore_errors=True)
    return report
