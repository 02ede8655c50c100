"""anemone-bridge: import/export wall time, CPU time and peak RSS on the embedded SmolLM2-135M, beside the floor.

The floor loads the same safetensors and saves them again without conversion. Every row runs in a fresh
Python process (interpreter start and imports included), 1 torch thread per rank; rows are interleaved over
`--rounds` rounds and the median is reported. CPU seconds are the whole process tree's (user + system, torchrun
ranks included), the figure to compare on a machine shared with other jobs; peak RSS is the largest single
process's. Two reference rows show the fixed cost of a fresh process: `import torch` alone and `import torch`
plus megatron-core's model classes (what every conversion needs before touching a weight).
SmolLM2 has 9 heads / 3 KV heads, so TP=2 is impossible: the multi-rank rows use TP=3.

Durability is the same on both sides: import and export fsync every file they write before the output folder
is renamed into place (an atomic write that survives a crash needs the data on disk first), and the floor
fsyncs the file it saves. `--no-fsync-floor` drops the floor's fsync, to see what it costs.

    uv run python benchmarks/bridge_convert.py [--tp 3] [--rounds 2] [--bytecode-cache DIR] [--model HF_DIR]

`--bytecode-cache DIR` lets every process (floor included) cache compiled bytecode in DIR
(PYTHONPYCACHEPREFIX), warmed by one untimed round: an ordinary install has .pyc files, while a host with
PYTHONDONTWRITEBYTECODE=1 compiles every imported module from source in every process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

FLOOR = """
import os, sys, torch
torch.set_num_threads(1)
from safetensors.torch import load_file, save_file
t = load_file(sys.argv[1] + "/model.safetensors")
save_file(t, sys.argv[2] + "/model.safetensors", metadata={"format": "pt"})
fd = os.open(sys.argv[2] + "/model.safetensors", os.O_RDONLY)
os.fsync(fd)  # durable, as our outputs are (see the module docstring)
os.close(fd)
"""
FLOOR_ROW = "floor: load + save the safetensors"
TORCH_ONLY = "import torch"
TORCH_MEGATRON = "import torch\nfrom megatron.core import dist_checkpointing\nfrom megatron.core.models.gpt import GPTModel"
IMPORT = """
import sys, torch
torch.set_num_threads(1)
from anemone_bridge import import_ckpt
import_ckpt(sys.argv[1], sys.argv[2], tp=int(sys.argv[3]), quiet=True)
"""
EXPORT = """
import sys, torch
torch.set_num_threads(1)
from anemone_bridge import export_ckpt
export_ckpt(sys.argv[1], sys.argv[2], quiet=True)
"""

# run the job as a child and report its tree's resources: wall, user+system CPU, largest process's peak RSS
_MEASURE = """
import resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
wall = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(rc, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss)
"""


def run(code: str, *args: str, env: dict[str, str]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MiB) of `code` in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-c", code, *args], check=True,
                         capture_output=True, text=True, env=env)
    rc, wall, cpu, kib = out.stdout.split()
    if rc != "0":
        raise SystemExit(f"benchmark job failed (exit {rc}): {code}")
    return float(wall), float(cpu), int(kib) / 1024  # ru_maxrss is KiB on Linux


def job_env(bytecode_cache: str | None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", ANEMONE_NO_PROGRESS="1", PYTHONWARNINGS="ignore")
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = bytecode_cache
    return env


def one_round(src: Path, tmp: Path, tps: list[int], env: dict[str, str],
              floor: str = "") -> dict[str, tuple[float, float, float]]:
    """Every row once, in a fixed interleaved order; outputs are removed after each round."""
    import shutil

    rows: dict[str, tuple[float, float, float]] = {}
    (tmp / "floor").mkdir(exist_ok=True)
    rows[FLOOR_ROW] = run(floor or FLOOR, str(src), str(tmp / "floor"), env=env)
    rows["ref: import torch"] = run(TORCH_ONLY, env=env)
    rows["ref: import torch + megatron-core"] = run(TORCH_MEGATRON, env=env)
    for tp in tps:
        rows[f"import HF -> Megatron, TP={tp}"] = run(IMPORT, str(src), str(tmp / f"mg{tp}"), str(tp), env=env)
        rows[f"export Megatron (TP={tp}) -> HF, 1 process"] = run(EXPORT, str(tmp / f"mg{tp}"), str(tmp / f"hf{tp}"),
                                                                   env=env)
    for p in tmp.iterdir():
        shutil.rmtree(p)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tp", type=int, default=3, help="the multi-rank TP size (must divide 9 and 3); 0: skip")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the median is reported")
    parser.add_argument("--bytecode-cache", default=None, help="PYTHONPYCACHEPREFIX for every process (warmed)")
    parser.add_argument("--no-fsync-floor", action="store_true", help="the floor does not fsync its file")
    parser.add_argument("--model", default=None, help="HF folder with one model.safetensors (default: the embedded "
                        "SmolLM2-135M); e.g. a larger random model to see the fixed start-up cost amortized")
    args = parser.parse_args()
    from anemone_core.models import default_model_dir

    src = Path(args.model).absolute() if args.model else default_model_dir()
    if not (src / "model.safetensors").is_file():
        raise SystemExit(f"--model {args.model!r}: needs a single model.safetensors in the folder")
    model_mib = (src / "model.safetensors").stat().st_size / 2**20
    env = job_env(args.bytecode_cache)
    tps = [1] + ([args.tp] if args.tp else [])
    floor = FLOOR.split("fd = os.open")[0] if args.no_fsync_floor else FLOOR
    loads = [os.getloadavg()]
    results: dict[str, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as td:
        if args.bytecode_cache:
            one_round(src, Path(td), [1], env)  # untimed: fills the bytecode cache
        for _ in range(args.rounds):
            for name, value in one_round(src, Path(td), tps, env, floor).items():
                results.setdefault(name, []).append(value)
            loads.append(os.getloadavg())
    med = {name: tuple(statistics.median(v[i] for v in vals) for i in range(3)) for name, vals in results.items()}
    floor_wall, floor_cpu, _ = med[FLOOR_ROW]
    print(f"model: {src.name}, {model_mib:.0f} MiB fp32 safetensors; {args.rounds} interleaved round(s), median; "
          f"bytecode cache: {args.bytecode_cache or 'off (as the host is set)'}; floor fsync: "
          f"{'off' if args.no_fsync_floor else 'on'}")
    print("load average (1/5/15 min) before and after each round: "
          + "; ".join("/".join(f"{x:.2f}" for x in la) for la in loads))
    print(f"{'job':44} {'wall s':>7} {'x floor':>7} {'CPU s':>7} {'x floor':>7} {'peak RSS MiB':>12} {'x model':>7}")
    for name, (wall, cpu, rss) in med.items():
        print(f"{name:44} {wall:7.1f} {wall / floor_wall:7.2f} {cpu:7.1f} {cpu / floor_cpu:7.2f} {rss:12.0f} "
              f"{rss / model_mib:7.2f}")


if __name__ == "__main__":
    main()
