"""Running a job on N ranks without the user writing torchrun: one rank runs in this process; more ranks run
`python -m torch.distributed.run --standalone` (gloo on CPU, NCCL on GPU) on `anemone_bridge.worker`.

A job is a function in `jobs.py` taking JSON-able keyword arguments and returning a JSON-able dict on rank 0.
An `AnemoneError` on any rank comes back to the caller as an `AnemoneError` with the same message; any other
failure comes back with the tail of the ranks' log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from anemone_core.errors import AnemoneError


def run_job(job: str, kwargs: dict[str, Any], nprocs: int = 1, timeout_s: float = 1800.0,
            quiet: bool = False) -> dict[str, Any]:
    """Run `jobs.<job>(**kwargs)` on `nprocs` ranks and return rank 0's result."""
    if nprocs == 1:
        from anemone_bridge import jobs

        return getattr(jobs, job)(**kwargs)
    with tempfile.TemporaryDirectory(prefix="anemone-bridge-") as td:
        spec = Path(td) / "job.json"
        spec.write_text(json.dumps({"job": job, "kwargs": kwargs, "out": td}))
        log = Path(td) / "ranks.log"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
               "--nproc-per-node", str(nprocs), "-m", "anemone_bridge.worker", str(spec)]
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
                   PYTHONWARNINGS="ignore", TORCH_CPP_LOG_LEVEL="ERROR")
        with log.open("w") as fh:
            status = _status(f"running {job} on {nprocs} ranks (torchrun, "
                             f"{'nccl' if _cuda() else 'gloo'})", quiet)
            with status:
                try:
                    rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=timeout_s).returncode
                except subprocess.TimeoutExpired:
                    raise AnemoneError(f"{job} on {nprocs} ranks did not finish within {timeout_s:.0f} s: see whether "
                                       "the machine is overloaded, or run with fewer ranks") from None
        errors = sorted(Path(td).glob("error-*.json"))
        if errors:
            raise AnemoneError(json.loads(errors[0].read_text())["message"])
        result = Path(td) / "result.json"
        if rc != 0 or not result.is_file():
            crashes = sorted(Path(td).glob("crash-*.txt"))
            text = crashes[0].read_text() if crashes else log.read_text(errors="replace")
            tail = "\n".join(text.splitlines()[-40:])
            raise RuntimeError(f"{job} failed on {nprocs} ranks (exit {rc}); last lines of the ranks' log:\n{tail}")
        return json.loads(result.read_text())


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _status(message: str, quiet: bool):
    import contextlib

    if quiet or os.environ.get("ANEMONE_NO_PROGRESS") == "1":
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(message)
