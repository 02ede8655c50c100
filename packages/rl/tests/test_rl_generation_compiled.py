"""The torch.compile'd decode step (`TorchGenerator(compile=True)`): same tokens and logprobs as the trainer's
recomputation, on tiny models, including after a refit. Compiling takes tens of seconds on CPU: slow."""

import pytest
import torch

from anemone_core.testing import tiny_model
from anemone_rl.algorithms import token_logprobs
from anemone_rl.generation import SamplingParams, TorchGenerator

PROMPTS = [[5, 17, 33, 8, 91, 100], [7, 3], [250, 251, 252, 9]]


def _trainer_logprobs(model, prompt, response, temperature=1.0):
    full = torch.tensor([prompt + response])
    with torch.no_grad():
        return token_logprobs(model(full).logits[:, len(prompt) - 1 : -1], full[:, len(prompt):], temperature)[0]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_compiled_logprobs_match_trainer_and_eager_tokens(arch):
    model = tiny_model(arch, seed=4).eval()
    eager = TorchGenerator(model, eos_token_ids=[2])
    compiled = TorchGenerator(model, eos_token_ids=[2], compile=True)
    params = SamplingParams(max_tokens=12, temperature=0.8, seed=0)
    outs = compiled.generate(PROMPTS, params)
    assert [o.token_ids for o in outs] == [o.token_ids for o in eager.generate(PROMPTS, params)]
    for p, out in zip(PROMPTS, outs, strict=True):
        torch.testing.assert_close(torch.tensor(out.logprobs), _trainer_logprobs(model, p, out.token_ids, 0.8),
                                   atol=1e-5, rtol=0)


@pytest.mark.slow
def test_compiled_generator_follows_a_refit():
    a, b = tiny_model("llama", seed=0), tiny_model("llama", seed=5)
    gen = TorchGenerator(a, eos_token_ids=[2], compile=True)
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    before = [o.token_ids for o in gen.generate(PROMPTS, params)]
    gen.load_weights(b.state_dict())
    after = gen.generate(PROMPTS, params)
    ref = TorchGenerator(b, eos_token_ids=[2]).generate(PROMPTS, params)
    assert [o.token_ids for o in after] == [o.token_ids for o in ref] != before
    for p, out in zip(PROMPTS, after, strict=True):
        torch.testing.assert_close(torch.tensor(out.logprobs), _trainer_logprobs(b, p, out.token_ids), atol=1e-5,
                                   rtol=0)


def test_compile_refuses_models_outside_the_llama_family():
    with pytest.raises(ValueError, match="compile=True needs the fast decoder, which runs Llama-family models"):
        TorchGenerator(tiny_model("mixtral", seed=0), eos_token_ids=[2], compile=True)
