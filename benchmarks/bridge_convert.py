"""anemone-bridge: import/export wall time and peak RSS on the embedded SmolLM2-135M, beside the floor.

The floor loads the same safetensors and saves them again without conversion. Every row runs in a fresh
Python process (interpreter start and imports included), 1 torch thread per rank; peak RSS is the largest
single process's (torchrun ranks are separate processes). SmolLM2 has 9 heads / 3 KV heads, so TP=2 is
impossible: the multi-rank row uses TP=3.

    uv run python benchmarks/bridge_convert.py [--tp 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOR = """
import sys, torch
torch.set_num_threads(1)
from safetensors.torch import load_file, save_file
t = load_file(sys.argv[1] + "/model.safetensors")
save_file(t, sys.argv[2] + "/model.safetensors", metadata={"format": "pt"})
"""
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


_MEASURE = """
import resource, subprocess, sys
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def run(code: str, *args: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB, the largest process of the tree) of the job in a fresh process."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-c", code, *args], check=True,
                         capture_output=True, text=True, env={**_env(), "OMP_NUM_THREADS": "1",
                                                              "ANEMONE_NO_PROGRESS": "1", "PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - t0
    rc, kib = out.stdout.split()
    if rc != "0":
        raise SystemExit(f"benchmark job failed (exit {rc}): {code}")
    return wall, int(kib) / 1024  # ru_maxrss is KiB on Linux


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tp", type=int, default=3, help="the multi-rank TP size (must divide 9 and 3)")
    args = parser.parse_args()
    from anemone_core.models import default_model_dir

    src = default_model_dir()
    model_mib = (src / "model.safetensors").stat().st_size / 2**20
    rows = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        (tmp / "floor").mkdir()
        floor_s, floor_rss = run(FLOOR, str(src), str(tmp / "floor"))
        rows.append(("floor: load + save safetensors", floor_s, floor_rss))
        for tp in (1, args.tp):
            s, rss = run(IMPORT, str(src), str(tmp / f"mg{tp}"), str(tp))
            rows.append((f"import HF -> Megatron, TP={tp}", s, rss))
            s, rss = run(EXPORT, str(tmp / f"mg{tp}"), str(tmp / f"hf{tp}"))
            rows.append((f"export Megatron (TP={tp}) -> HF, 1 process", s, rss))
    print(f"model: {src.name}, {model_mib:.0f} MiB fp32 safetensors")
    print(f"{'job':44} {'wall s':>8} {'x floor':>8} {'peak RSS MiB':>13} {'x model':>8}")
    for name, s, rss in rows:
        print(f"{name:44} {s:8.1f} {s / floor_s:8.2f} {rss:13.0f} {rss / model_mib:8.2f}")


if __name__ == "__main__":
    main()
