"""The torch generation backend against transformers on tiny models: logits, greedy tokens, logprobs."""

import pytest
import torch

from anemone_core.testing import tiny_model, tiny_tokenizer
from anemone_rl.algorithms import token_logprobs
from anemone_rl.generation import SamplingParams, TorchGenerator
from anemone_rl.generation.decoders import FastDecoder, HFDecoder, fast_supported, left_pad
from anemone_rl.generation.sampling import sample_next

PROMPTS = [[5, 17, 33, 8, 91, 100], [7, 3], [250, 251, 252, 9]]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "mixtral"])
def test_decoder_logits_match_hf_forward_with_left_padding(arch):
    model = tiny_model(arch, seed=3)
    dec = FastDecoder(model) if fast_supported(model) else HFDecoder(model)
    assert isinstance(dec, FastDecoder) == (arch != "mixtral")
    ids, valid = left_pad(PROMPTS)
    dec.start(len(PROMPTS), ids.shape[1] + 3)
    logits = dec.prefill(ids, valid)
    extra = torch.tensor([11, 12, 13])
    seqs = [list(p) for p in PROMPTS]
    for step in range(3):
        for i in range(len(PROMPTS)):  # reference: each sequence alone, no padding
            ref = model(torch.tensor([seqs[i]])).logits[0, -1]
            torch.testing.assert_close(logits[i], ref, atol=2e-5, rtol=1e-4)
        tok = extra + step
        for i in range(len(seqs)):
            seqs[i].append(int(tok[i]))
        logits = dec.decode(tok)


def test_repeated_prompts_are_prefilled_once_and_decode_as_alone():
    """GRPO's G samples of a prompt: the decoder runs each distinct prompt once and copies its cache rows, and
    every repeat then decodes exactly as it does alone."""
    model = tiny_model("qwen2", seed=4)
    dec = FastDecoder(model)
    batch = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2], PROMPTS[0], PROMPTS[1]]
    ids, valid = left_pad(batch)
    seen = []
    forward = dec._forward
    dec._forward = lambda ids_, pos, mask: seen.append(ids_.shape[0]) or forward(ids_, pos, mask)
    dec.start(len(batch), ids.shape[1] + 3)
    logits = dec.prefill(ids, valid)
    assert seen == [3]  # three distinct prompts, one prefill row each
    tok = torch.tensor([40, 41, 42, 43, 44, 45])
    logits2 = dec.decode(tok)
    assert seen == [3, 6]  # decoding runs every row
    for i, p in enumerate(batch):
        ref = model(torch.tensor([p + [int(tok[i])]])).logits[0]
        torch.testing.assert_close(logits[i], ref[-2], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(logits2[i], ref[-1], atol=2e-5, rtol=1e-4)


def test_greedy_generation_matches_transformers_generate():
    model = tiny_model("llama", seed=1)
    gen = TorchGenerator(model, eos_token_ids=[2])
    outs = gen.generate(PROMPTS, SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))
    for p, out in zip(PROMPTS, outs, strict=True):
        ref = model.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                             pad_token_id=0, min_new_tokens=12)
        assert out.token_ids == ref[0, len(p):].tolist()
        assert out.finish_reason == "length"
        # logprobs equal the trainer's recomputation on the full sequence
        full = torch.tensor([p + out.token_ids])
        lp = token_logprobs(model(full).logits[:, len(p) - 1 : -1], full[:, len(p):])[0]
        torch.testing.assert_close(torch.tensor(out.logprobs), lp, atol=1e-5, rtol=1e-4)


def test_sampled_logprobs_match_trainer_at_temperature_and_compaction():
    model = tiny_model("qwen2", seed=2)
    gen = TorchGenerator(model, eos_token_ids=[2, 3, 4, 5, 6, 7])  # many EOS ids: rows finish early
    prompts = PROMPTS * 3
    outs = gen.generate(prompts, SamplingParams(max_tokens=20, temperature=0.7, top_p=0.9, top_k=50, seed=0))
    assert any(o.finish_reason == "eos" for o in outs)
    for p, out in zip(prompts, outs, strict=True):
        full = torch.tensor([p + out.token_ids])
        lp = token_logprobs(model(full).logits[:, len(p) - 1 : -1], full[:, len(p):], temperature=0.7)[0]
        torch.testing.assert_close(torch.tensor(out.logprobs), lp, atol=1e-4, rtol=1e-4)
        if out.finish_reason == "eos":
            assert out.token_ids[-1] in (2, 3, 4, 5, 6, 7)
    again = gen.generate(prompts, SamplingParams(max_tokens=20, temperature=0.7, top_p=0.9, top_k=50, seed=0))
    assert [o.token_ids for o in again] == [o.token_ids for o in outs]  # seeded: reproducible


def test_hf_fallback_compacts_finished_rows_and_keeps_trainer_logprobs():
    """Mixtral runs through HFDecoder: finished rows leave its DynamicCache, the rest decode as before."""
    model = tiny_model("mixtral", seed=2)
    gen = TorchGenerator(model, eos_token_ids=list(range(2, 60)))  # many EOS ids: rows finish at different steps
    assert isinstance(gen.decoder, HFDecoder) and gen.decoder.compacts
    kept = []
    keep = gen.decoder.keep
    gen.decoder.keep = lambda rows: kept.append(len(rows)) or keep(rows)
    prompts = PROMPTS * 3
    outs = gen.generate(prompts, SamplingParams(max_tokens=20, temperature=0.7, seed=0))
    assert kept and any(o.finish_reason == "eos" for o in outs)  # the batch shrank at least once
    for p, out in zip(prompts, outs, strict=True):
        full = torch.tensor([p + out.token_ids])
        with torch.no_grad():
            lp = token_logprobs(model(full).logits[:, len(p) - 1 : -1], full[:, len(p):], temperature=0.7)[0]
        torch.testing.assert_close(torch.tensor(out.logprobs), lp, atol=1e-4, rtol=1e-4)


def test_top_k_and_top_p_restrict_support():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]]).repeat(400, 1)
    g = torch.Generator().manual_seed(0)
    tok, _ = sample_next(logits, 1.0, top_k=2, generator=g)
    assert set(tok.tolist()) == {0, 1}
    # probs ~ [.64, .24, .09, .03, .01]: top_p=0.8 keeps tokens 0 and 1 (0.64 < 0.8)
    tok, lp = sample_next(logits, 1.0, top_p=0.8, generator=g)
    assert set(tok.tolist()) == {0, 1}
    torch.testing.assert_close(lp[tok == 0][0], torch.log_softmax(logits[0], -1)[0])


def test_inverse_cdf_draws_follow_the_distribution():
    """Frequencies over 20,000 draws match the probabilities (5 standard errors), zero-probability tokens are
    never drawn, and a seeded generator repeats its draws."""
    from anemone_rl.generation.sampling import inverse_cdf

    probs = torch.tensor([0.5, 0.0, 0.3, 0.15, 0.0, 0.05])
    n = 20_000
    draws = inverse_cdf(probs.repeat(n, 1), torch.Generator().manual_seed(3))
    freq = torch.bincount(draws, minlength=6).double() / n
    se = (probs.double() * (1 - probs.double()) / n).sqrt()
    assert bool(((freq - probs.double()).abs() <= 5 * se + 1e-12).all()), freq
    assert freq[1] == 0 and freq[4] == 0
    again = inverse_cdf(probs.repeat(n, 1), torch.Generator().manual_seed(3))
    assert torch.equal(draws, again)
    # unnormalised rows (a truncated softmax's float error) are scaled by their total, not clipped
    assert set(inverse_cdf(torch.tensor([[0.0, 2.0, 0.0]]).repeat(50, 1)).tolist()) == {1}


def test_stop_strings_and_tokenizer_text():
    tok = tiny_tokenizer()
    model = tiny_model("llama", seed=0)
    gen = TorchGenerator(model, tokenizer=tok)
    prompt = tok("The capital of")["input_ids"]
    free = gen.generate([prompt], SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True))[0]
    assert free.text is not None and len(free.text) > 2
    stop = free.text[1:3]  # a string the greedy output is known to contain early
    cut = gen.generate([prompt], SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True, stop=(stop,)))[0]
    assert cut.finish_reason == "stop"
    assert stop in cut.text and len(cut.token_ids) < 16
    assert cut.token_ids == free.token_ids[: len(cut.token_ids)]


@pytest.mark.parametrize("tied", [False, True])
def test_load_weights_refits_fused_copies(tied):
    """A tied model's state dict names the shared embedding twice (embed_tokens and lm_head): both are accepted."""
    a, b = tiny_model("llama", seed=0, tie_word_embeddings=tied), tiny_model("llama", seed=5, tie_word_embeddings=tied)
    assert ("lm_head.weight" in b.state_dict()) and (tied == (b.lm_head.weight is b.model.embed_tokens.weight))
    gen = TorchGenerator(a, eos_token_ids=[2])
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    gen.load_weights(b.state_dict())
    ref = TorchGenerator(b, eos_token_ids=[2]).generate(PROMPTS, params)
    assert [o.token_ids for o in gen.generate(PROMPTS, params)] == [o.token_ids for o in ref]


def test_bad_sampling_params_are_rejected():
    with pytest.raises(ValueError, match="max_tokens=0"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
