import json

import pytest

from anemone_core.cli import main
from anemone_core.errors import AnemoneError
from anemone_core.plan import PRESETS, Cluster, estimate, plan, plan_report, shape_from_hf_config
from anemone_core.testing import tiny_config, tiny_model


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "mistral", "mixtral", "qwen3_moe"])
def test_parameter_count_matches_the_real_model(arch):
    model = tiny_model(arch)
    shape = shape_from_hf_config(tiny_config(arch).to_dict())
    assert shape.total_params() == sum(p.numel() for p in model.parameters())


def test_tied_embedding_counted_once():
    shape = shape_from_hf_config(tiny_config("llama", tie_word_embeddings=True).to_dict())
    model = tiny_model("llama", tie_word_embeddings=True)
    assert shape.total_params() == sum(p.numel() for p in model.parameters())  # parameters() dedups tied


def test_published_sizes():
    assert round(PRESETS["llama3-70b"].total_params() / 1e9, 1) == 70.6
    assert round(PRESETS["llama3-8b"].total_params() / 1e9, 2) == 8.03
    assert round(PRESETS["mixtral-8x7b"].total_params() / 1e9, 1) == 46.7
    assert round(PRESETS["mixtral-8x7b"].active_params() / 1e9, 1) == 12.9
    assert round(PRESETS["smollm2-135m"].total_params() / 1e6, 1) == 134.5


def test_seed_example_70b_on_32_h100():
    c = Cluster(gpus=32, gpus_per_node=8, gpu_memory_gb=80)
    layouts = plan(PRESETS["llama3-70b"], c)
    by_key = {(lay.tp, lay.pp, lay.cp, lay.ep): lay for lay in layouts}
    lay = by_key[(8, 4, 1, 1)]
    assert lay.dp == 1 and lay.fits == "yes"
    assert all(lay.tp <= 8 for lay in layouts)  # TP stays inside a node
    assert all(lay.dp * lay.tp * lay.pp * lay.cp == 32 for lay in layouts)
    # 70B with full replication on 32 GPUs at tp=1, pp=1 cannot fit, and the planner says so.
    assert by_key[(1, 1, 1, 1)].fits == "no"


def test_asking_for_dp2_explains_it_needs_64_gpus():
    with pytest.raises(AnemoneError, match=r"= 64 GPUs, but the world size is 32.*smaller tp/pp"):
        plan(PRESETS["llama3-70b"], Cluster(gpus=32), tp=8, pp=4, dp=2)


@pytest.mark.parametrize("preset", ["llama3-8b", "llama3-70b", "llama3-405b"])
def test_tp3_on_llama_names_valid_choices(preset):
    with pytest.raises(AnemoneError, match=r"tp=3 does not divide .*choose tp in \{1,2,4,8"):
        plan(PRESETS[preset], Cluster(gpus=24, gpus_per_node=8), tp=3)


def test_memory_arithmetic_by_hand():
    # llama3-8b, tp=2, pp=1, dp=4, bf16 AdamW, ZeRO-1: weights 2 B, grads 4 B, optimizer 12 B / dp per param.
    shape, c = PRESETS["llama3-8b"], Cluster(gpus=8, seq_len=2048)
    lay = estimate(shape, c, tp=2, pp=1, cp=1, ep=1, dp=4)
    per_gpu = (shape.layers * shape.layer_params() + 2 * shape.embedding_params()) / 2
    assert lay.params_per_gpu == int(per_gpu)
    gib = 1024**3
    assert lay.weights_gb == pytest.approx(per_gpu * 2 / gib)
    assert lay.grads_gb == pytest.approx(per_gpu * 4 / gib)
    assert lay.optimizer_gb == pytest.approx(per_gpu * 12 / 4 / gib)
    # Recompute always needs less activation memory; more TP or CP always less.
    assert lay.activations_recompute_gb < lay.activations_gb
    assert estimate(shape, c, 4, 1, 1, 1, 2).activations_gb < lay.activations_gb


def test_moe_expert_parallel_shards_experts():
    shape, c = PRESETS["mixtral-8x7b"], Cluster(gpus=16)
    one = estimate(shape, c, tp=2, pp=1, cp=1, ep=1, dp=8)
    eight = estimate(shape, c, tp=2, pp=1, cp=1, ep=8, dp=8)
    assert eight.params_per_gpu < one.params_per_gpu / 3
    assert all(lay.ep in (1, 2, 4, 8) for lay in plan(shape, c))


def test_bad_cluster_values():
    with pytest.raises(AnemoneError, match="--gpus 0 must be >= 1"):
        plan(PRESETS["llama3-8b"], Cluster(gpus=0))
    with pytest.raises(AnemoneError, match="whole number of nodes"):
        plan(PRESETS["llama3-8b"], Cluster(gpus=12, gpus_per_node=8))


def test_cli_json(capsys):
    rc = main(["plan", "--preset", "llama3-70b", "--gpus", "32", "--gpus-per-node", "8", "--gpu-memory-gb", "80",
               "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert any(lay["tp"] == 8 and lay["pp"] == 4 and lay["dp"] == 1 for lay in report["layouts"])
    assert report["recommended"]["fits"] == "yes"
    assert report == json.loads(json.dumps(plan_report(PRESETS["llama3-70b"], Cluster(32, 8, 80.0), plan(
        PRESETS["llama3-70b"], Cluster(32, 8, 80.0)))))


def test_cli_tp3_fails_with_choices(capsys):
    assert main(["plan", "--preset", "llama3-8b", "--tp", "3"]) == 2
    assert "choose tp in {1,2,4,8}" in capsys.readouterr().err


def test_cli_reads_hf_config(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(tiny_config("qwen2").to_dict()))
    assert main(["plan", "--model", str(tmp_path), "--gpus", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["qkv_bias"] is True and {lay["tp"] for lay in report["layouts"]} == {1, 2}
