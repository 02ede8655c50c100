"""The direct torch_dist reader (one-process export) against megatron-core's own `dist_checkpointing.load`,
the import's files read by megatron, and the no-copy parameter fill."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle

import pytest
import torch

from anemone_bridge.auto_bridge import AutoBridge
from anemone_bridge.convert import import_ckpt
from anemone_bridge.dist_reader import DistCheckpointReader, read_sharded
from anemone_bridge.megatron_ckpt import load_sharded
from anemone_bridge.model_builder import build_gpt_model
from anemone_bridge.weights import _fill
from anemone_core.errors import AnemoneError


def _request(bridge, padded_vocab):
    """The meta model's sharded state dict with fresh CPU tensors to read into (no extra state)."""
    model = build_gpt_model(bridge.arch, bridge.hf_config, 1, 1, 1, padded_vocab_size=padded_vocab, meta=True)
    meta = dict(model.state_dict(keep_vars=True))
    return {k: dataclasses.replace(sh, data=torch.empty(meta[k].shape, dtype=meta[k].dtype))
            for k, sh in model.sharded_state_dict().items() if not k.endswith("_extra_state")}


@pytest.mark.parametrize("arch", ["mixtral"])  # gated experts: factories; qwen2 is in the streamed-export test
def test_reader_equals_megatron_load_of_the_imported_files(tiny_folders, tmp_path, arch):
    import_ckpt(tiny_folders[arch], tmp_path / "mg", quiet=True)
    assert torch.serialization.get_crc32_options()  # our save turned the checksums off only for itself
    padded = json.loads((tmp_path / "mg" / "anemone_bridge.json").read_text())["padded_vocab_size"]
    bridge = AutoBridge.from_hf_pretrained(tmp_path / "mg" / "hf")
    with bridge.parallel(1, 1, 1):
        ref = load_sharded(_request(bridge, padded), tmp_path / "mg")  # megatron-core reads the files
        reader = DistCheckpointReader(tmp_path / "mg")
        ours = read_sharded(reader, _request(bridge, padded))
        assert ref.keys() == ours.keys() and len(ours) > 10
        for key in ref:
            assert torch.equal(ref[key], ours[key]), key
        # a region over several stored chunks (two layers of one stacked key) is assembled, not refused
        stacked = next(k for k, md in reader.tensors.items() if len(md.size) == 3 and len(md.chunks) >= 2)
        size = tuple(reader.tensors[stacked].size)
        both = reader.read(stacked, (0, 0, 0), (2, *size[1:]), reader.tensors[stacked].properties.dtype)
        assert torch.equal(both[0], reader.read(stacked, (0, 0, 0), (1, *size[1:]), both.dtype)[0])
        assert torch.equal(both[1], reader.read(stacked, (1, 0, 0), (1, *size[1:]), both.dtype)[0])
        with pytest.raises(AnemoneError, match="covers"):  # past the stored layers: a gap, named
            reader.read(stacked, (size[0] - 1, 0, 0), (2, *size[1:]), both.dtype)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_reader_refuses_a_metadata_pickle_naming_other_code(tiny_folders, tmp_path):
    import_ckpt(tiny_folders["llama"], tmp_path / "mg", quiet=True)
    (tmp_path / "mg" / ".metadata").write_bytes(pickle.dumps(_Evil()))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(AnemoneError, match="names .posix.system|names .os.system"):
            DistCheckpointReader(tmp_path / "mg")
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "pwned").exists()


def test_fill_aliases_a_whole_tensor_for_a_save_and_copies_otherwise():
    param = torch.nn.Parameter(torch.empty(4, 3))
    whole = torch.randn(4, 3)
    _fill(param, whole, alias=True)
    assert param.data_ptr() == whole.data_ptr()  # no copy
    param = torch.nn.Parameter(torch.empty(4, 3))
    _fill(param, whole)  # a model the caller keeps owns its values
    assert param.data_ptr() != whole.data_ptr() and torch.equal(param, whole)
    param = torch.nn.Parameter(torch.empty(2, 3))
    big = torch.randn(4, 3)
    _fill(param, big[2:], alias=True)  # a TP chunk: DCP would clone a view, so it is copied into the parameter
    assert param.data_ptr() != big.data_ptr() and torch.equal(param, big[2:])
    param = torch.nn.Parameter(torch.empty(4, 3))
    _fill(param, whole.double(), alias=True)  # another dtype: converted
    assert param.dtype == torch.float32 and torch.equal(param, whole)
