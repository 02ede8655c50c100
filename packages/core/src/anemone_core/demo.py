"""`anemone demo`: a model's whole life on a CPU, one command, every step through the packages' own commands.

Each step runs `anemone <group> <verb> ... --json` in a child process (so core imports no sibling package, and the
demo exercises exactly what a user would type), keeps the JSON it printed under `<run>/steps/<step>.json`, and
reports one key figure. A step whose package is not installed is skipped and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anemone_core.errors import AnemoneError


@dataclass
class Ctx:
    run_dir: Path
    quick: bool
    device: str = "cpu"  # "cpu" or "cuda": where training, generation and evaluation run
    models: dict[str, str] = field(default_factory=dict)  # "base", "sft", "aligned" -> HF folder
    results: dict[str, Any] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)


@dataclass
class StepResult:
    produced: str
    figure: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    name: str
    group: str  # the command group it needs (its package must be installed)
    what: str
    run: Callable[[Ctx], StepResult]


def anemone(ctx: Ctx, step: str, *args: str, tag: str | None = None) -> Any:
    """Run `anemone args... --json`; stderr (progress bars) goes to the terminal, stdout's JSON is returned and kept."""
    cmd = [sys.executable, "-m", "anemone_core.cli", *args, "--json"]
    print(f"\n$ anemone {' '.join(args)} --json", file=sys.stderr, flush=True)
    env = dict(os.environ, ANEMONE_DEMO="1")
    if ctx.device == "cpu":  # --device cpu on a GPU host: keep every step (automodel picks CUDA itself) on the CPU
        env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        raise AnemoneError(f"demo step '{step}' failed (exit {proc.returncode}): anemone {' '.join(args)}; "
                           "see the messages above, fix them, and rerun with --steps to resume from this step")
    text = proc.stdout.strip()
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    try:
        data = json.loads(text[start:]) if start >= 0 else {}
    except ValueError:
        data = {"stdout": text[-2000:]}
    out = ctx.path("steps", f"{tag or step}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, default=str))
    return data


def find(data: Any, *keys: str) -> Any:
    """The first value under any of `keys`, searched depth-first through nested dicts/lists."""
    if isinstance(data, dict):
        for k in keys:
            if k in data and not isinstance(data[k], dict | list):
                return data[k]
        for v in data.values():
            hit = find(v, *keys)
            if hit is not None:
                return hit
    elif isinstance(data, list):
        for v in data:
            hit = find(v, *keys)
            if hit is not None:
                return hit
    return None


def fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


# ---- the steps ------------------------------------------------------------------------------------------------


def step_curate(ctx: Ctx) -> StepResult:
    out = ctx.path("curate")
    data = anemone(ctx, "curate", "curator", "run", f"output={out}", "--overwrite")
    n_in = find(data, "input", "documents_in", "read")
    kept = find(data, "kept")
    rejected, dups = find(data, "rejected"), find(data, "duplicates")
    return StepResult(f"{out.name}/ (kept, rejects, duplicates, tokens .bin/.idx)",
                      f"{kept} of {n_in} docs kept, {rejected} rejected, {dups} duplicates", data)


def step_sft(ctx: Ctx) -> StepResult:
    out = ctx.path("sft")
    steps = "12" if ctx.quick else "40"
    data = anemone(ctx, "sft", "automodel", "finetune", f"output.dir={out}", f"train.steps={steps}", "--overwrite")
    merged = out / "hf"
    if not (merged / "config.json").is_file():
        raise AnemoneError(f"the SFT step wrote no merged model at {merged}")
    ctx.models["sft"] = str(merged)
    first, final = find(data, "first_loss"), find(data, "final_loss")
    return StepResult("sft/hf (merged LoRA model) + adapter", f"loss {fmt(first)} -> {fmt(final)} in {steps} steps", data)


def step_grpo(ctx: Ctx) -> StepResult:
    out = ctx.path("grpo")
    start = ctx.models.get("sft") or ctx.models["base"]
    steps = "4" if ctx.quick else "10"
    gpu = ["ray.device=cuda"] if ctx.device == "cuda" else []
    # run.overwrite: a fresh GRPO run from this SFT model (an existing run folder would otherwise be resumed)
    data = anemone(ctx, "grpo", "rl", "grpo", f"model.path={start}", f"run.out={out}", f"grpo.steps={steps}",
                   "run.overwrite=true", *gpu)
    model = out / "model"
    if not (model / "config.json").is_file():
        raise AnemoneError(f"the GRPO step wrote no model at {model}")
    ctx.models["aligned"] = str(model)
    before, after = find(data, "eval_accuracy_start"), find(data, "eval_accuracy_end")
    figure = f"held-out accuracy {fmt(before)} -> {fmt(after)} in {steps} steps" if before is not None else \
        f"reward mean {fmt(find(data, 'reward_mean'))}"
    return StepResult("grpo/model (aligned HF folder)", figure, data)


def _metric(results: Any, task: str, metric: str) -> tuple[Any, Any]:
    m = ((results.get("tasks") or {}).get(task) or {}).get("metrics", {}).get(metric) or {}
    return m.get("value"), m.get("stderr")


def step_evaluate(ctx: Ctx) -> StepResult:
    limit = "40" if ctx.quick else "100"
    scores: dict[str, Any] = {}
    for tag in ("base", "sft", "aligned"):
        if tag not in ctx.models:
            continue
        # The arithmetic questions go through the chat template, as the SFT and GRPO steps trained them; the
        # perplexity set is plain text.
        arith = anemone(ctx, "evaluate", "eval", "run", "--model", ctx.models[tag], "--tasks", "arith_gen",
                        "--chat-template", "--limit", limit, "--device", ctx.device, "--output", str(ctx.path("eval", tag, "arith")),
                        "--overwrite", tag=f"evaluate-{tag}-arith")
        ppl = anemone(ctx, "evaluate", "eval", "run", "--model", ctx.models[tag], "--tasks", "stdlib_docs",
                      "--device", ctx.device,
                      "--output", str(ctx.path("eval", tag, "ppl")), "--overwrite", tag=f"evaluate-{tag}-ppl")
        scores[tag] = {"exact_match": _metric(arith, "arith_gen", "exact_match"),
                       "bits_per_byte": _metric(ppl, "stdlib_docs", "bits_per_byte")}
    parts = []
    for tag, s in scores.items():
        (acc, err), (bpb, _) = s["exact_match"], s["bits_per_byte"]
        parts.append(f"{tag} {fmt(acc)}±{fmt(err, 2)} (bpb {fmt(bpb)})")
    verdict = ""
    if "aligned" in scores and "base" in scores:
        better = (scores["aligned"]["exact_match"][0] or 0) > (scores["base"]["exact_match"][0] or 0)
        verdict = "; aligned beats base" if better else "; aligned does NOT beat base"
    return StepResult("eval/<model>/{arith,ppl}/results.json + samples.jsonl",
                      "held-out arithmetic exact match: " + ", ".join(parts) + verdict, {"scores": scores})


def step_convert(ctx: Ctx) -> StepResult:
    model = ctx.models.get("aligned") or ctx.models.get("sft") or ctx.models["base"]
    tp = smallest_tensor_parallel(model)
    data = anemone(ctx, "convert", "bridge", "verify", "--model", model, "--tp", str(tp))
    agree, cos = data.get("argmax_agreement"), data.get("cosine_min")
    diff = (data.get("roundtrip") or {}).get("max_abs_diff")
    return StepResult(f"HF -> Megatron-Core (TP={tp}) -> HF, verified",
                      f"argmax agreement {fmt(agree)}, min cosine {fmt(cos, 6)}, round trip max|diff| {fmt(diff)}", data)


def smallest_tensor_parallel(model: str) -> int:
    """The smallest TP > 1 that divides the model's attention and KV heads (TP=2 where it can; SmolLM2-135M has
    9 heads and 3 KV heads, so TP=3), else 1."""
    cfg = json.loads((Path(model) / "config.json").read_text())
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or heads
    return next((t for t in range(2, heads + 1) if heads % t == 0 and kv % t == 0), 1)


def step_export(ctx: Ctx) -> StepResult:
    model = ctx.models.get("aligned") or ctx.models.get("sft") or ctx.models["base"]
    gguf = anemone(ctx, "export", "export", "gguf", "--model", model, "--out", str(ctx.path("export", "model-f16.gguf")),
                   "--overwrite", tag="export-gguf")
    onnx = anemone(ctx, "export", "export", "onnx", "--model", model, "--out", str(ctx.path("export", "onnx")),
                   "--overwrite", tag="export-onnx")
    answer = serve_and_chat(model, "What is 12 + 35?")
    ctx.path("steps", "export-serve.json").write_text(json.dumps(answer, indent=2))
    text = answer["choices"][0]["message"]["content"].strip().replace("\n", " ")
    agree_g, agree_o = _check(gguf, "greedy agreement"), _check(onnx, "greedy agreement")
    return StepResult("export/model-f16.gguf, export/onnx/, one served chat answer",
                      f"GGUF agreement {fmt(agree_g)}, ONNX agreement {fmt(agree_o)}; served: {text[:60]!r}",
                      {"gguf": gguf, "onnx": onnx, "serve": answer})


def _check(report: dict[str, Any], name: str) -> Any:
    """A named check's value from an exporter's validation report."""
    return next((c.get("value") for c in report.get("checks", []) if c.get("name") == name), None)


def serve_and_chat(model: str, question: str, timeout_s: float = 240.0) -> dict[str, Any]:
    """Start `anemone export serve` on a free loopback port, ask one chat question, stop the server."""
    from anemone_core.launch import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "anemone_core.cli", "export", "serve", "--model", model, "--port", str(port)]
    print(f"\n$ anemone export serve --model {model} --port {port}", file=sys.stderr, flush=True)
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:
            if server.poll() is not None:
                raise AnemoneError(f"the server exited early (code {server.returncode}): run `anemone export serve "
                                   f"--model {model}` to see why")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise AnemoneError(f"the server did not become healthy on {base} within {timeout_s:g} s")
            time.sleep(0.5)
        body = json.dumps({"model": Path(model).name, "max_tokens": 32, "temperature": 0,
                           "messages": [{"role": "user", "content": question}]}).encode()
        req = urllib.request.Request(f"{base}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


STEPS: list[Step] = [
    Step("curate", "curator", "filter, dedup and redact a small offline corpus", step_curate),
    Step("sft", "automodel", "LoRA fine-tune the embedded model on arithmetic/instruction chats", step_sft),
    Step("grpo", "rl", "align with GRPO on the arithmetic task", step_grpo),
    Step("evaluate", "eval", "base vs SFT vs aligned on held-out arithmetic and perplexity", step_evaluate),
    Step("convert", "bridge", "HF -> Megatron-Core (TP=2, or the smallest TP the heads allow) -> HF, verified", step_convert),
    Step("export", "export", "GGUF + ONNX (validated), then serve and answer one chat", step_export),
]


def installed_groups() -> set[str]:
    import importlib.metadata as md

    return {ep.name for ep in md.entry_points(group="anemone.commands")}


def resolve_device(device: str) -> str:
    """"auto" is CUDA when torch sees a GPU, else the CPU; "cuda" without a GPU is an error naming the fix."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise AnemoneError(f"--device {device!r}: choose auto, cpu or cuda")
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise AnemoneError("--device cuda: torch sees no CUDA GPU here; use --device cpu (or auto)")
    return ("cuda" if has_cuda else "cpu") if device == "auto" else device


def run_demo(run_dir: str | os.PathLike, steps: list[str] | None = None, quick: bool = False,
             device: str = "auto") -> dict[str, Any]:
    """Run the chosen steps in order; later steps reuse what earlier ones (or an earlier run) left in `run_dir`.
    On a GPU (device auto or cuda) fine-tuning, GRPO and evaluation run on it; conversion and export stay on CPU."""
    from anemone_core.io import atomic_write_text
    from anemone_core.models import default_model_dir

    names = [s.name for s in STEPS]
    chosen = steps or names
    unknown = [s for s in chosen if s not in names]
    if unknown:
        raise AnemoneError(f"unknown demo step(s) {unknown}: choose from {', '.join(names)} (comma-separated)")
    ctx = Ctx(Path(run_dir).absolute(), quick, resolve_device(device))
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    ctx.models["base"] = str(default_model_dir())
    for tag, rel in (("sft", "sft/hf"), ("aligned", "grpo/model")):  # outputs of an earlier run, for --steps
        if (ctx.path(rel) / "config.json").is_file():
            ctx.models[tag] = str(ctx.path(rel))
    groups = installed_groups()
    rows: list[dict[str, Any]] = []
    total = time.time()
    for step in STEPS:
        if step.name not in chosen:
            continue
        if step.group not in groups:
            rows.append({"step": step.name, "status": "skipped", "produced": "-",
                         "figure": f"anemone {step.group} is not installed", "seconds": 0.0})
            continue
        print(f"\n=== step {step.name}: {step.what}", file=sys.stderr, flush=True)
        t0 = time.time()
        result = step.run(ctx)
        rows.append({"step": step.name, "status": "ok", "produced": result.produced, "figure": result.figure,
                     "seconds": round(time.time() - t0, 1)})
    summary = {"run_dir": str(ctx.run_dir), "quick": quick, "device": ctx.device, "steps": rows, "models": ctx.models,
               "total_seconds": round(time.time() - total, 1)}
    atomic_write_text(ctx.path("demo.json"), json.dumps(summary, indent=2))
    return summary
