"""Launching worker processes with torchrun for the user, so nobody has to write a torchrun line by hand."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence

from anemone_core.errors import AnemoneError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def torchrun_command(argv: Sequence[str], nproc: int, module: bool = False) -> list[str]:
    """`python -m torch.distributed.run --nproc-per-node N --master-addr 127.0.0.1 --master-port P [-m] argv...`
    for one node; workers rendezvous on loopback only."""
    if nproc < 1:
        raise AnemoneError(f"nproc={nproc} is invalid: launch at least 1 process")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    return cmd + (["-m"] if module else []) + list(argv)


def run_torchrun(argv: Sequence[str], nproc: int, module: bool = False, timeout_s: float | None = None,
                 env: dict[str, str] | None = None, capture: bool = False,
                 threads_per_proc: int | None = None) -> subprocess.CompletedProcess:
    """Run `argv` (a script, or a module with `module=True`) on `nproc` local processes and wait.

    CPU workers get `threads_per_proc` torch threads each (default: the cores divided among them), since
    oversubscribed threads make gloo collectives crawl. A failing rank fails the call with its exit code.
    """
    full_env = dict(os.environ, **(env or {}))
    threads = threads_per_proc or max(1, (os.cpu_count() or 1) // nproc)
    full_env.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        proc = subprocess.run(torchrun_command(argv, nproc, module), env=full_env, timeout=timeout_s,
                              capture_output=capture, text=True)
    except subprocess.TimeoutExpired:
        raise AnemoneError(f"{nproc} workers running {' '.join(argv)} did not finish within {timeout_s:g} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or "")[-2000:] if capture else "see the output above"
        raise AnemoneError(f"worker processes failed (exit {proc.returncode}) running {' '.join(argv)}: {tail}")
    return proc
