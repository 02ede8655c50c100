"""The table transforms: each kind's to_megatron / to_hf are inverses at every TP size, and the QKV layout is
Megatron's (grouped by query group)."""

from __future__ import annotations

import pytest
import torch

from anemone_bridge.architectures import REGISTRY, bridge_for, list_supported_models
from anemone_bridge.mapping import Geometry, Mapping, qkv_interleave, qkv_split

GEO = Geometry(num_heads=4, num_kv_heads=2, head_dim=8, vocab_size=50, padded_vocab_size=64)


def _rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize(
    ("kind", "shapes"),
    [("replicated", [(16,)]), ("column", [(16, 32)]), ("row", [(32, 16)]), ("vocab", [(50, 32)]),
     ("qkv", [(32, 32), (16, 32), (16, 32)]), ("qkv", [(32,), (16,), (16,)]), ("gated", [(16, 32), (16, 32)])],
)
def test_kinds_round_trip(kind, shapes, tp):
    row = Mapping("m", tuple(f"h{i}" for i in range(len(shapes))), kind)
    hf = [_rand(*s) for s in shapes]
    shards = [row.to_megatron(hf, GEO, r, tp) for r in range(tp if row.tp_dim is not None else 1)]
    back = row.to_hf(shards, GEO)
    assert len(back) == len(hf)
    for a, b in zip(hf, back, strict=True):
        assert torch.equal(a, b)
    assert tuple(shards[0].shape) == row.megatron_shape(shapes, GEO, tp)


def test_qkv_layout_groups_queries_with_their_kv_head():
    d = GEO.head_dim
    q = torch.arange(4)[:, None].repeat_interleave(d, 0).float()  # head index per row, (4*d, 1)
    k = 10 + torch.arange(2)[:, None].repeat_interleave(d, 0).float()
    v = 20 + torch.arange(2)[:, None].repeat_interleave(d, 0).float()
    qkv = qkv_interleave(q, k, v, GEO)[:, 0]  # (2*(2+2)*d,)
    heads = qkv.reshape(-1, d)[:, 0].tolist()
    assert heads == [0, 1, 10, 20, 2, 3, 11, 21]  # [q0 q1 k0 v0 | q2 q3 k1 v1]
    assert all(torch.equal(a, b) for a, b in zip(qkv_split(qkv_interleave(q, k, v, GEO), GEO), (q, k, v), strict=True))


def test_gated_shard_holds_its_slice_of_gate_and_up():
    gate, up = torch.zeros(8, 2), torch.ones(8, 2)
    row = Mapping("fc1", ("g", "u"), "gated")
    shard = row.to_megatron([gate, up], GEO, 1, 2)
    assert shard.shape == (8, 2) and shard[:4].sum() == 0 and shard[4:].sum() == 8


def test_vocab_padding_added_then_removed():
    row = Mapping("emb", ("e",), "vocab")
    shards = [row.to_megatron([_rand(50, 4)], GEO, r, 2) for r in range(2)]
    assert [s.shape[0] for s in shards] == [32, 32] and shards[1][-14:].abs().sum() == 0
    assert row.to_hf(shards, GEO)[0].shape == (50, 4)


def test_tables_expand_in_a_deterministic_order():
    table = REGISTRY["mixtral"].table
    rows = table.expand(num_layers=2, num_experts=4)
    names = [r.megatron for r in rows]
    assert names == [r.megatron for r in table.expand(2, 4)]
    assert names[0] == "embedding.word_embeddings.weight" and names[-1] == "output_layer.weight"
    assert "decoder.layers.1.mlp.experts.local_experts.3.linear_fc2.weight" in names
    assert len(names) == len(set(names))
    expert = next(r for r in rows if r.megatron == "decoder.layers.1.mlp.experts.local_experts.3.linear_fc1.weight")
    assert expert.hf == ("model.layers.1.block_sparse_moe.experts.3.w1.weight",
                         "model.layers.1.block_sparse_moe.experts.3.w3.weight")


def test_registry_lists_every_architecture(tiny_folders):
    from anemone_bridge.auto_bridge import read_hf_config

    assert {m["name"] for m in list_supported_models()} == {"llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen3_moe"}
    for arch, folder in tiny_folders.items():
        assert bridge_for(read_hf_config(folder)).name == arch.replace("_tied", "")


def test_local_names_become_global_across_stages_and_expert_ranks():
    from anemone_bridge.runtime import Layout
    from anemone_bridge.weights import to_global

    lay = Layout(tp=1, pp=2, ep=2, tp_rank=0, pp_rank=1, ep_rank=1, dp_rank=1, rank=3, world_size=4)
    assert to_global("decoder.layers.0.mlp.experts.local_experts.1.linear_fc1.weight", lay, 3, 2) == \
        "decoder.layers.3.mlp.experts.local_experts.3.linear_fc1.weight"
    # Transformer Engine's fused norms map onto the same table rows as the local spec's
    assert to_global("decoder.layers.1.self_attention.linear_qkv.layer_norm_weight", lay, 3, 2) == \
        "decoder.layers.4.input_layernorm.weight"
    assert to_global("decoder.layers.0.mlp.linear_fc1.layer_norm_weight", lay, 3, 2) == \
        "decoder.layers.3.pre_mlp_layernorm.weight"
