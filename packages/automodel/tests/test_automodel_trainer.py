"""The training loop on a tiny Llama: invariances, outputs that the ecosystem loads, resume, errors."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from anemone_automodel.parallelize import tp_plan
from anemone_core.errors import AnemoneError
from anemone_core.testing import tiny_mixtral


def _ids():
    return torch.randint(3, 500, (2, 17), generator=torch.Generator().manual_seed(0))


def test_grad_accum_4x1_equals_1x4(tiny_dir, tmp_path, train_fn):
    full = ["lora.enabled=false", "optim.lr=1e-2"]
    a = train_fn(tiny_dir, tmp_path / "a", *full, "train.micro_batch_size=4", "train.grad_accum=1")
    b = train_fn(tiny_dir, tmp_path / "b", *full, "train.micro_batch_size=1", "train.grad_accum=4")
    assert a["losses"][-1] < a["losses"][0]  # it learns
    torch.testing.assert_close(torch.tensor(a["losses"]), torch.tensor(b["losses"]), rtol=0, atol=1e-5)


def test_full_finetune_folder_loads_in_transformers(tiny_dir, tmp_path, train_fn):
    s = train_fn(tiny_dir, tmp_path / "run", "lora.enabled=false", "optim.lr=1e-2", keep_model=True)
    trained = s["model"].eval()
    loaded = AutoModelForCausalLM.from_pretrained(s["outputs"]["hf"], dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(_ids()).logits, trained(_ids()).logits, rtol=0, atol=1e-6)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    assert not torch.allclose(base(_ids()).logits, loaded(_ids()).logits)  # the weights did change


def test_lora_adapter_and_merged_folder(tiny_dir, tmp_path, train_fn):
    from peft import PeftModel

    s = train_fn(tiny_dir, tmp_path / "run", "optim.lr=1e-2", "lora.r=4", "lora.alpha=8")
    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(_ids()).logits
        peft_model = PeftModel.from_pretrained(base, s["outputs"]["adapter"]).eval()
        adapted = peft_model(_ids()).logits
        merged = AutoModelForCausalLM.from_pretrained(s["outputs"]["hf"], dtype=torch.float32).eval()
        assert not torch.allclose(adapted, base_logits)  # the adapter was trained
        torch.testing.assert_close(merged(_ids()).logits, adapted, rtol=0, atol=1e-5)


def test_packing_run_and_outputs(tiny_dir, tmp_path, train_fn):
    s = train_fn(tiny_dir, tmp_path / "run", "data.pack=true", "data.seq_len=128", "train.micro_batch_size=2",
                 "output.save_hf=false")
    assert len(s["losses"]) == 4 and all(x == x for x in s["losses"])
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {"loss", "grad_norm", "lr", "tokens_per_s", "peak_mem_gb", "mfu"} <= set(rows[0])


ARGS = ["train.steps=6", "optim.warmup_steps=1", "optim.lr=1e-2", "checkpoint.every=2", "output.save_hf=false",
        "data.max_examples=40"]  # 40 examples / 8 per step: the run crosses an epoch, so the reshuffle resumes too


@pytest.mark.parametrize("lora", ["true", "false"])
def test_crash_and_resume_continues_the_trajectory(tiny_dir, tmp_path, train_fn, lora, monkeypatch):
    whole = train_fn(tiny_dir, tmp_path / "whole", *ARGS, f"lora.enabled={lora}")
    monkeypatch.setenv("ANEMONE_AUTOMODEL_KILL_AT_STEP", "3:raise")
    with pytest.raises(RuntimeError, match="simulated crash after step 3"):
        train_fn(tiny_dir, tmp_path / "run", *ARGS, f"lora.enabled={lora}")
    monkeypatch.delenv("ANEMONE_AUTOMODEL_KILL_AT_STEP")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-000002"]
    resumed = train_fn(tiny_dir, tmp_path / "run", *ARGS, f"lora.enabled={lora}", "checkpoint.resume=true")
    assert resumed["resumed_from"] == 2
    torch.testing.assert_close(torch.tensor(resumed["losses"]), torch.tensor(whole["losses"][2:]), rtol=0, atol=1e-6)


@pytest.mark.slow  # a separate process (~60-190 s on the shared machine)
def test_hard_kill_and_resume_continues_the_trajectory(tiny_dir, tmp_path, train_fn, cli):
    run_cli, _ = cli
    args = [f"model.path={tiny_dir}", *ARGS, "lora.enabled=false"]
    whole = train_fn(tiny_dir, tmp_path / "whole", *ARGS, "lora.enabled=false")
    killed = run_cli(["finetune", *args, f"output.dir={tmp_path / 'run'}"], env={"ANEMONE_AUTOMODEL_KILL_AT_STEP": "3"})
    assert killed.returncode == 137
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-000002"]
    resumed = train_fn(tiny_dir, tmp_path / "run", *ARGS, "lora.enabled=false", "checkpoint.resume=true")
    assert resumed["resumed_from"] == 2
    torch.testing.assert_close(torch.tensor(resumed["losses"]), torch.tensor(whole["losses"][2:]), rtol=0, atol=1e-6)


def test_resume_with_a_different_model_is_refused(tiny_dir, tmp_path, train_fn):
    from anemone_core.testing import save_tiny

    train_fn(tiny_dir, tmp_path / "run", "checkpoint.at_end=true", "output.save_hf=false", "train.steps=2")
    other = save_tiny(tmp_path / "qwen", "qwen2")
    with pytest.raises(AnemoneError, match="resume with the same model.path"):
        train_fn(other, tmp_path / "run", "checkpoint.resume=true", "output.save_hf=false", "train.steps=2")


def test_existing_run_dir_is_refused(tiny_dir, tmp_path, train_fn):
    train_fn(tiny_dir, tmp_path / "run", "train.steps=1", "optim.warmup_steps=0", "output.save_hf=false")
    with pytest.raises(AnemoneError, match="--overwrite"):
        train_fn(tiny_dir, tmp_path / "run", "train.steps=1", "optim.warmup_steps=0")


def test_row_without_messages_names_the_row(tiny_dir, tmp_path, train_fn):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps(good) + "\n" + json.dumps({"text": "no messages here"}) + "\n")
    with pytest.raises(AnemoneError, match=r"data row 1 has no 'messages'"):
        train_fn(tiny_dir, tmp_path / "run", f"data.path={data}")
    assert not any((tmp_path / "run").iterdir())  # nothing written: the same command runs again once fixed


def test_model_without_tp_plan_is_a_clear_error():
    with pytest.raises(AnemoneError, match=r"model_type = 'mixtral' has no tensor-parallel plan.*parallel.tp=1"):
        tp_plan(tiny_mixtral())


def test_bad_config_fails_before_work():
    from anemone_automodel.config import FinetuneConfig
    from anemone_core.config import load_config
    from anemone_core.errors import ConfigError

    with pytest.raises(ConfigError, match="parallel.tp=1 or lora.enabled=false"):
        load_config(FinetuneConfig, None, ["parallel.tp=2"])
    with pytest.raises(ConfigError, match="train.micro_batch_size"):
        load_config(FinetuneConfig, None, ["train.micro_batch_size=0"])


@pytest.mark.gpu
def test_bf16_autocast_on_gpu(tiny_dir, tmp_path, train_fn):
    s = train_fn(tiny_dir, tmp_path / "run", "lora.enabled=false", "optim.lr=1e-2", keep_model=True)
    assert next(s["model"].parameters()).device.type == "cuda"
    assert next(s["model"].parameters()).dtype == torch.float32  # fp32 master weights, bf16 compute
    assert s["losses"][-1] < s["losses"][0]


def test_progress_without_a_terminal_is_one_line_per_step(monkeypatch, capsys):
    from anemone_automodel.metrics import step_bar

    monkeypatch.delenv("ANEMONE_NO_PROGRESS", raising=False)
    with step_bar(3, 1, "finetune run", enabled=True) as bar:  # resumed after step 1
        bar(loss=0.5, tok_s=120.0)
        bar(loss=0.25, tok_s=121.0)
    err = capsys.readouterr().err.splitlines()
    assert err == ["finetune run step 2/3 loss 0.5 tok_s 120", "finetune run step 3/3 loss 0.25 tok_s 121"]
