"""The per-rank entry point `launch.run_job` starts under torchrun: `python -m anemone_bridge.worker job.json`."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def main(spec_path: str) -> int:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    rank = int(os.environ.get("RANK", "0"))
    from anemone_bridge import jobs
    from anemone_core.errors import AnemoneError

    try:
        result = getattr(jobs, spec["job"])(**spec["kwargs"])
    except AnemoneError as exc:
        (out / f"error-{rank}.json").write_text(json.dumps({"message": str(exc)}))
        return 2
    except BaseException:
        traceback.print_exc()
        (out / f"crash-{rank}.txt").write_text(traceback.format_exc())
        return 1
    if rank == 0:
        (out / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
