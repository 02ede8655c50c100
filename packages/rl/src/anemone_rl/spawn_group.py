"""A policy worker group as spawned processes (torch.multiprocessing + gloo) instead of Ray actors.

For tests and measurements that must run where a local Ray instance does not start (the GRPO trainer itself
uses Ray for `grpo.policy_workers` > 1). `run_group` starts N processes, each builds a `PolicyWorker` of rank
r, runs the same list of method calls (rank r with its own arguments) and exits; rank 0's answers come back.

    answers = run_group(2, worker_kwargs, [("train_step", [(share0,), (share1,)]), ("state_dict", None)])
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

Calls = list[tuple[str, list[tuple] | None]]  # (method, per-rank argument tuples or None for no arguments)


def _rank_main(rank: int, world: int, port: int, worker_kwargs: dict[str, Any], calls: Calls, out: str) -> None:
    import torch.distributed as dist

    from anemone_rl.workers import PolicyWorker

    worker = PolicyWorker(**worker_kwargs, rank=rank, world_size=world, master_port=port)
    answers, seconds = [], []
    for method, args in calls:
        t0, c0 = time.perf_counter(), time.process_time()
        answers.append(getattr(worker, method)(*(args[rank] if args else ())))
        seconds.append([time.perf_counter() - t0, time.process_time() - c0])  # rank 0's wall and CPU s
    if rank == 0:
        torch.save({"answers": answers, "seconds": seconds}, out)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def run_group(world: int, worker_kwargs: dict[str, Any], calls: Calls, start_method: str = "spawn",
              timed: bool = False) -> Any:
    """Run `calls` on a `world`-rank policy group of new processes; rank 0's answers, in order.
    Answers must be tensors, numbers, strings, None, or lists/dicts of them (they come back through a file
    read with `weights_only=True`). `start_method="fork"` skips re-importing torch and transformers in every
    child (~10-25 s each on a loaded 2-core machine); fork only from a process that has not started threads
    of its own. With `timed`, also rank 0's [wall s, CPU s] of each call: (answers, seconds)."""
    import torch.multiprocessing as mp

    from anemone_rl.ray_setup import free_port

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "answers.pt")
        env_threads = os.environ.get("OMP_NUM_THREADS")
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # children inherit; each also sets run.threads itself
        try:
            mp.start_processes(_rank_main, args=(world, free_port(), worker_kwargs, calls, out), nprocs=world,
                               join=True, start_method=start_method)
        finally:
            if env_threads is None:
                os.environ.pop("OMP_NUM_THREADS", None)
        got = torch.load(out, weights_only=True)
    return (got["answers"], got["seconds"]) if timed else got["answers"]
