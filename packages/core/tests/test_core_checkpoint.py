import json

import pytest
import torch

from anemone_core.checkpoint import INDEX, iter_hf_tensors, load_hf_state_dict, read_shapes, save_hf_folder
from anemone_core.errors import AnemoneError
from anemone_core.testing import tiny_llama, tiny_tokenizer


def test_sharded_roundtrip_loads_in_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_llama()
    tok_dir = tmp_path / "tok"
    tiny_tokenizer().save_pretrained(tok_dir)
    out = save_hf_folder(model.state_dict(), tmp_path / "ckpt", config=model.config, tokenizer_from=tok_dir,
                         max_shard_bytes=100_000)
    index = json.loads((out / INDEX).read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((out / s).is_file() for s in shards)
    assert (out / "tokenizer.json").is_file() and (out / "config.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    x = torch.randint(0, 512, (2, 9))
    torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)
    sd, report = load_hf_state_dict(out, expected=model.state_dict())
    assert report.ok and all(torch.equal(sd[k], v) for k, v in model.state_dict().items())


def test_streaming_generator_input(tmp_path):
    gen = ((f"w{i}", torch.full((10,), float(i))) for i in range(5))
    out = save_hf_folder(gen, tmp_path / "s", max_shard_bytes=80)
    names = [n for n, _ in iter_hf_tensors(out)]
    assert sorted(names) == [f"w{i}" for i in range(5)]


def test_tied_tensors_are_saved(tmp_path):
    w = torch.randn(4, 4)
    out = save_hf_folder({"a": w, "b": w}, tmp_path / "t")
    sd, _ = load_hf_state_dict(out)
    assert torch.equal(sd["a"], sd["b"])


def test_report_names_missing_unexpected_and_mismatched(tmp_path):
    out = save_hf_folder({"a": torch.zeros(2), "b": torch.zeros(3), "x": torch.zeros(1)}, tmp_path / "r")
    with pytest.raises(AnemoneError) as err:
        load_hf_state_dict(out, expected={"a": (2,), "b": (4,), "c": (1,)})
    msg = str(err.value)
    assert "missing 1: c" in msg and "unexpected 1: x" in msg and "b has (3,), expected (4,)" in msg
    _, report = load_hf_state_dict(out, expected={"a": (2,), "b": (3,), "c": (1,), "x": (1,)}, allow_missing=["c*"])
    assert report.ok


def test_existing_output_refused_and_nothing_half_written(tmp_path):
    out = save_hf_folder({"a": torch.zeros(2)}, tmp_path / "o")
    with pytest.raises(AnemoneError, match="--overwrite"):
        save_hf_folder({"a": torch.ones(2)}, out)

    def broken():
        yield "a", torch.zeros(2)
        raise RuntimeError("conversion died")

    with pytest.raises(RuntimeError):
        save_hf_folder(broken(), tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    save_hf_folder({"a": torch.ones(2)}, out, overwrite=True)
    assert torch.equal(dict(iter_hf_tensors(out))["a"], torch.ones(2))


def test_corrupt_truncated_and_pickle_files(tmp_path):
    out = save_hf_folder({"a": torch.zeros(1000)}, tmp_path / "c")
    f = out / "model.safetensors"
    f.write_bytes(f.read_bytes()[:200])  # truncated
    with pytest.raises(AnemoneError, match="corrupt or truncated"):
        read_shapes(out)
    with pytest.raises(AnemoneError, match="corrupt or truncated"):
        dict(iter_hf_tensors(out))
    pk = tmp_path / "pickled"
    pk.mkdir()
    torch.save({"a": torch.zeros(1)}, pk / "pytorch_model.bin")
    with pytest.raises(AnemoneError, match="never unpickles"):
        load_hf_state_dict(pk)
    with pytest.raises(AnemoneError, match="does not exist"):
        load_hf_state_dict(tmp_path / "missing")
