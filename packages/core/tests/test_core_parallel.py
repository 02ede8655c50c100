import textwrap

import pytest

from anemone_core.errors import AnemoneError
from anemone_core.launch import run_torchrun
from anemone_core.parallel import ParallelDims


def test_dp_is_derived():
    assert ParallelDims(tp=2, pp=2).resolve(8).dp == 2
    assert ParallelDims(tp=8, pp=4).resolve(32).as_dict() == {"dp": 1, "tp": 8, "pp": 4, "cp": 1, "ep": 1}


def test_world_size_mismatch_explains_the_fix():
    with pytest.raises(AnemoneError, match=r"= 64 GPUs, but the world size is 32.*use 64 GPUs, or smaller tp/pp"):
        ParallelDims(dp=2, tp=8, pp=4).resolve(32)
    with pytest.raises(AnemoneError, match="does not divide the world size 12"):
        ParallelDims(tp=8).resolve(12)
    with pytest.raises(AnemoneError, match=">= 1"):
        ParallelDims(tp=0).resolve(4)


def test_expert_parallel_comes_from_data_ranks():
    assert ParallelDims(tp=2, ep=2).resolve(4).ep == 2
    with pytest.raises(AnemoneError, match=r"ep=4 does not divide dp x cp = 2.*\{1,2\}"):
        ParallelDims(tp=2, ep=4).resolve(4)


def test_model_checks_list_valid_choices():
    with pytest.raises(AnemoneError, match=r"tp=3 does not divide num_attention_heads=32.*choose tp in \{1,2,4,8\}"):
        ParallelDims(tp=3).check_model(32, 8, 32)
    with pytest.raises(AnemoneError, match=r"pp=3 does not divide num_layers=32.*\{1,2,4,8,16,32\}"):
        ParallelDims(pp=3).check_model(32, 8, 32)
    with pytest.raises(AnemoneError, match=r"ep=3 does not divide num_experts=8"):
        ParallelDims(ep=3).check_model(32, 8, 32, num_experts=8)
    with pytest.raises(AnemoneError, match="dense"):
        ParallelDims(ep=2).check_model(32, 8, 32)
    ParallelDims(tp=4, pp=2, ep=4).check_model(32, 8, 32, num_experts=8)


WORKER = textwrap.dedent("""
    import torch, torch.distributed as dist
    from anemone_core.parallel import ParallelDims, init_distributed, build_device_mesh, destroy_distributed
    torch.set_num_threads(1)
    info = init_distributed(timeout_s=60)
    assert info.backend == "gloo" and info.device == "cpu" and info.world_size == 2
    t = torch.tensor([info.rank + 1.0])
    dist.all_reduce(t)
    dims = ParallelDims(tp=2).resolve(info.world_size)
    mesh = build_device_mesh(dims, "cpu")
    print(f"rank={info.rank} sum={t.item()} tp_size={mesh['tp'].size()} dp_size={mesh['dp'].size()}", flush=True)
    destroy_distributed()
""")


def test_init_distributed_with_torchrun_gloo(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = run_torchrun([str(script)], nproc=2, timeout_s=180, env={"ANEMONE_FORCE_CPU": "1"}, capture=True,
                       threads_per_proc=1)
    for rank in (0, 1):
        assert f"rank={rank} sum=3.0 tp_size=2 dp_size=1" in out.stdout


def test_single_process_needs_no_process_group(monkeypatch):
    import torch.distributed as dist

    from anemone_core.parallel import init_distributed

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed()
    assert info.world_size == 1 and info.rank == 0 and not dist.is_initialized()


def test_world_size_without_master_addr_is_explained(monkeypatch):
    from anemone_core.parallel import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(AnemoneError, match="torchrun"):
        init_distributed()


@pytest.mark.gpu
def test_gpu_picks_nccl_and_a_cuda_device(monkeypatch):
    from anemone_core.parallel import dist_env

    monkeypatch.delenv("ANEMONE_FORCE_CPU", raising=False)
    info = dist_env()
    assert info.backend == "nccl" and info.device.startswith("cuda:")
