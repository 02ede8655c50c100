"""The seams between packages, crossed the way a user crosses them: one package's command writes a folder and the
next package's command reads it. Every step is a real `anemone ... --json` child process on a tiny random model
(or, for the curator, the built-in corpus and the embedded tokenizer), so these tests break when one package
changes what it writes in a way the next one no longer reads.

    curator  -> automodel   the curated .bin/.idx tokens pretrain a model (every kept document, every token)
    automodel -> bridge     a fine-tuned (merged LoRA) folder converts to Megatron-Core at TP=2 and back, bit-exact
    rl       -> evaluator, export   a GRPO output folder evaluates and exports to ONNX and GGUF, validated
    export   -> evaluator   the served model scores what the same model scores locally
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from anemone_core.launch import free_port
from anemone_core.testing import save_tiny


def anemone(*args: str, timeout: float = 900) -> Any:
    """`anemone args... --json` in a child process; the parsed JSON it printed on stdout."""
    proc = subprocess.run([sys.executable, "-m", "anemone_core.cli", *args, "--json"], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, f"anemone {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    text = proc.stdout
    start = min(i for i in (text.find("{"), text.find("[")) if i >= 0)
    return json.JSONDecoder().raw_decode(text[start:])[0]


def read_jsonl(folder: Path) -> list[dict]:
    rows = []
    for f in sorted(folder.glob("*.jsonl*")):
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt", encoding="utf-8") as fh:
            rows += [json.loads(line) for line in fh if line.strip()]
    return rows


def test_curated_tokens_pretrain_in_automodel(tmp_path):
    from transformers import AutoModelForCausalLM

    from anemone_automodel.data.megatron import read_megatron_documents

    cur = anemone("curator", "run", f"output={tmp_path / 'cur'}", "--overwrite")
    tokens = cur["files"]["tokens"]
    tokenize = next(s for s in cur["stages"] if s["name"].endswith("tokenize"))

    # What automodel reads is exactly what the curator wrote: one document per kept record, every token.
    docs = read_megatron_documents(tokens, seq_len=1 << 30)
    kept = read_jsonl(Path(cur["files"]["kept"]))
    assert len(docs) == len(kept) == int(cur["files"]["tokens_docs"]) > 0
    assert sum(len(d["input_ids"]) for d in docs) == tokenize["counters"]["tokens"]

    overrides = "{num_hidden_layers: 1, hidden_size: 32, intermediate_size: 64, num_attention_heads: 2, " \
                "num_key_value_heads: 1}"
    run = anemone("automodel", "pretrain", f"data.path={tokens}", "data.format=megatron", "data.seq_len=64",
                  "data.shuffle=false", "train.steps=3", "train.micro_batch_size=2", "optim.warmup_steps=1",
                  f"model.config_overrides={overrides}", f"output.dir={tmp_path / 'pre'}", "output.overwrite=true")
    assert run["examples"] == len(read_megatron_documents(tokens, seq_len=64))
    assert len(run["losses"]) == 3 and all(torch.isfinite(torch.tensor(run["losses"])))
    model = AutoModelForCausalLM.from_pretrained(run["outputs"]["hf"])
    first = torch.tensor([docs[0]["input_ids"][:16]])
    assert model(first).logits.shape == (1, 16, model.config.vocab_size)


def test_finetuned_folder_converts_in_bridge_at_tp2(tmp_path):
    base = save_tiny(tmp_path / "base", "llama")
    run = anemone("automodel", "finetune", f"model.path={base}", "train.steps=2", "train.micro_batch_size=2",
                  "optim.warmup_steps=0", "data.max_examples=8", f"output.dir={tmp_path / 'sft'}",
                  "output.overwrite=true")
    merged = Path(run["outputs"]["hf"])
    assert (merged / "config.json").is_file()

    report = anemone("bridge", "verify", "--model", str(merged), "--tp", "2")
    assert report["argmax_agreement"] == 1.0
    assert report["cosine_min"] >= 0.9999
    assert report["roundtrip"]["max_abs_diff"] == 0.0


def test_grpo_output_evaluates_and_exports(tmp_path):
    base = save_tiny(tmp_path / "base", "llama")
    rl = anemone("rl", "grpo", f"model.path={base}", f"run.out={tmp_path / 'grpo'}", "grpo.steps=1",
                 "grpo.prompts_per_step=2", "grpo.generations_per_prompt=2", "grpo.micro_batch_size=4",
                 "grpo.max_new_tokens=8", "data.eval_prompts=4", "ray.enabled=false", "run.progress=false")
    model = tmp_path / "grpo" / "model"
    assert (model / "config.json").is_file(), rl

    results = anemone("eval", "run", "--model", str(model), "--tasks", "arith_gen", "--limit", "6",
                      "--chat-template", "--output", str(tmp_path / "eval"), "--overwrite")
    metric = results["tasks"]["arith_gen"]["metrics"]["exact_match"]
    assert metric["n"] == 6 and 0.0 <= metric["value"] <= 1.0
    samples = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6

    onnx = anemone("export", "onnx", "--model", str(model), "--out", str(tmp_path / "onnx"), "--overwrite")
    gguf = anemone("export", "gguf", "--model", str(model), "--out", str(tmp_path / "m.gguf"), "--overwrite")
    for report in (onnx, gguf):
        checks = {c["name"]: c for c in report["checks"]}
        assert checks["greedy agreement"]["value"] == 1.0, report
        assert report["ok"] and all(c["ok"] for c in report["checks"]), report


def test_served_model_scores_like_local(tmp_path):
    model = save_tiny(tmp_path / "model", "llama")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "anemone_core.cli", "export", "serve", "--model", str(model),
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, f"server exited: {server.stderr.read()[-2000:]}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not become healthy in 300 s"
            time.sleep(0.5)

        common = ["--tasks", "arith_mc,arith_gen", "--limit", "8", "--overwrite"]
        local = anemone("eval", "run", "--model", str(model), "--output", str(tmp_path / "local"), *common)
        served = anemone("eval", "run", "--endpoint", f"http://127.0.0.1:{port}/v1", "--output",
                         str(tmp_path / "served"), *common)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)

    for task, metric in (("arith_mc", "acc"), ("arith_mc", "acc_norm"), ("arith_gen", "exact_match")):
        assert served["tasks"][task]["metrics"][metric]["value"] == local["tasks"][task]["metrics"][metric]["value"]

    def by_doc(folder: Path) -> dict[tuple, dict]:
        rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
        return {(r["task"], r["doc_id"]): r for r in rows}

    loc, srv = by_doc(tmp_path / "local"), by_doc(tmp_path / "served")
    assert loc.keys() == srv.keys() and len(loc) == 16
    for key, row in loc.items():
        if key[0] == "arith_gen":  # greedy decoding: the served text is the local text
            assert srv[key]["response"] == row["response"], key
