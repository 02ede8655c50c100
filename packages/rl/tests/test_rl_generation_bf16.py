"""Generation with bf16 weight matmuls (`matmul_dtype="bfloat16"`): the same model as an HF forward whose Linear
layers multiply in bf16, on tiny models; refit; and the settings it refuses."""

import pytest
import torch
import torch.nn.functional as F

from anemone_core.testing import tiny_model
from anemone_rl.algorithms import token_logprobs
from anemone_rl.generation import SamplingParams, TorchGenerator
from anemone_rl.generation.decoders import FastDecoder, build_decoder, left_pad

BF16_CPU = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
needs_bf16 = pytest.mark.skipif(not BF16_CPU, reason="this CPU has no oneDNN bf16 support (AVX512-BF16 / AMX)")

PROMPTS = [[5, 17, 33, 8, 91, 100], [7, 3], [250, 251, 252, 9]]


class _Bf16Linears:
    """Inside the block every nn.Linear of `model` multiplies bf16 x bf16 (fp32 accumulation, bf16 result)
    and returns fp32: the reference for the decoder's bf16 matmuls."""

    def __init__(self, model):
        self.linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]

    def __enter__(self):
        for m in self.linears:
            m.forward = lambda x, m=m: (F.linear(x.bfloat16(), m.weight.bfloat16()).float()
                                        + (m.bias if m.bias is not None else 0))

    def __exit__(self, *exc):
        for m in self.linears:
            del m.forward


@needs_bf16
@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_bf16_decoder_matches_hf_with_bf16_linears(arch):
    """Prefill and decode logits equal the HF forward with bf16 Linear layers (each sequence alone, no padding),
    as closely as the fp32 decoder equals the fp32 forward, and differ from the fp32 forward by bf16 rounding:
    the decoder multiplies in bf16 and does nothing else differently. The head ran in bf16: bf16 logits."""
    model = tiny_model(arch, seed=3)
    dec = FastDecoder(model, matmul_dtype="bfloat16")
    ids, valid = left_pad(PROMPTS)
    dec.start(len(PROMPTS), ids.shape[1] + 3)
    logits = dec.prefill(ids, valid)
    extra = torch.tensor([11, 12, 13])
    seqs = [list(p) for p in PROMPTS]
    off_fp32 = 0.0
    for step in range(3):
        assert logits.dtype == torch.float32 and torch.equal(logits, logits.bfloat16().float())
        for i in range(len(PROMPTS)):
            with torch.no_grad():
                fp32 = model(torch.tensor([seqs[i]])).logits[0, -1]
                with _Bf16Linears(model):
                    ref = model(torch.tensor([seqs[i]])).logits[0, -1]
            torch.testing.assert_close(logits[i], ref, atol=2e-5, rtol=1e-4)
            off_fp32 = max(off_fp32, float((logits[i] - fp32).abs().max()))
        tok = extra + step
        for i in range(len(seqs)):
            seqs[i].append(int(tok[i]))
        logits = dec.decode(tok)
    assert off_fp32 > 1e-3  # ~50x the tolerance above (0.0024-0.0027 on these models)


@needs_bf16
def test_bf16_generation_logprobs_track_the_fp32_trainer_through_compaction_and_refit():
    model = tiny_model("qwen2", seed=2)
    gen = TorchGenerator(model, eos_token_ids=[2, 3, 4, 5, 6, 7], matmul_dtype="bfloat16")
    prompts = PROMPTS * 3
    params = SamplingParams(max_tokens=20, temperature=0.7, seed=0)
    outs = gen.generate(prompts, params)
    assert any(o.finish_reason == "eos" for o in outs)  # rows finished: the batch was compacted
    gaps = []
    for p, out in zip(prompts, outs, strict=True):
        full = torch.tensor([p + out.token_ids])
        with torch.no_grad():
            lp = token_logprobs(model(full).logits[:, len(p) - 1 : -1], full[:, len(p):], temperature=0.7)[0]
        gaps.append((torch.tensor(out.logprobs) - lp).abs())
    gap = torch.cat(gaps)
    assert float(gap.max()) < 0.05 and float(gap.mean()) > 1e-6, (gap.max(), gap.mean())  # bf16, not fp32
    # refit: new weights are re-packed; the result equals a fresh bf16 generator on those weights
    other = tiny_model("qwen2", seed=9)
    gen.load_weights(other.state_dict())
    greedy = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    fresh = TorchGenerator(other, eos_token_ids=[2], matmul_dtype="bfloat16").generate(PROMPTS, greedy)
    assert [o.token_ids for o in gen.generate(PROMPTS, greedy)] == [o.token_ids for o in fresh]


def test_bad_matmul_dtype_settings_are_refused():
    model = tiny_model("llama", seed=0)
    with pytest.raises(ValueError, match="matmul_dtype='float16': use one of"):
        TorchGenerator(model, matmul_dtype="float16")
    with pytest.raises(ValueError, match="compile=True runs fp32 matmuls"):
        build_decoder(model, compile=True, matmul_dtype="bfloat16")
    with pytest.raises(ValueError, match="needs the fast decoder.*model_type='mixtral'"):
        TorchGenerator(tiny_model("mixtral", seed=0), matmul_dtype="bfloat16")


def test_grpo_config_refuses_bf16_matmuls_with_vllm():
    from anemone_rl.grpo_config import GRPOConfig

    with pytest.raises(ValueError, match="gen_matmul_dtype = 'bfloat16'.*vLLM runs in the model's dtype"):
        GRPOConfig.model_validate({"grpo": {"gen_matmul_dtype": "bfloat16"},
                                   "ray": {"generator": "vllm", "colocated": False}})
