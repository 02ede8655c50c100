"""Chat tokenization: ids equal the template's own tokenization; labels cover exactly the assistant turns."""

from __future__ import annotations

import pytest

from anemone_automodel.data.chat import IGNORE_INDEX, tokenize_chat, tokenize_prompt_completion, tokenize_text
from anemone_core.errors import AnemoneError
from anemone_core.models import default_model_dir
from anemone_core.testing import tiny_tokenizer

CHAT = [
    {"role": "user", "content": "What is 12 + 34?"},
    {"role": "assistant", "content": "12 + 34 = 46."},
    {"role": "user", "content": "And 7 * 8?"},
    {"role": "assistant", "content": "7 * 8 = 56."},
]


@pytest.fixture(scope="module", params=["tiny", "embedded"])
def tok(request):
    if request.param == "tiny":
        return tiny_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir())


def _trained_runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    runs, cur = [], []
    for i, lab in zip(ids, labels, strict=True):
        if lab == IGNORE_INDEX:
            if cur:
                runs.append(cur)
            cur = []
        else:
            assert lab == i
            cur.append(i)
    return runs + ([cur] if cur else [])


@pytest.mark.parametrize("messages", [CHAT, [{"role": "system", "content": "Be brief."}] + CHAT[:2]])
def test_mask_token_by_token_against_template(tok, messages):
    out = tokenize_chat(tok, messages)
    # The ids are exactly what the template produces.
    assert out["input_ids"] == list(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    # Trained tokens: one run per assistant turn, each the template's tokens of content + <|im_end|>.
    runs = _trained_runs(out["input_ids"], out["labels"])
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    assert len(runs) == len(answers)
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    for run, answer in zip(runs, answers, strict=True):
        assert run[-1] == end_id
        assert tok.decode(run) == answer + "<|im_end|>"
    # Token by token: each trained position sits between the generation prompt and the end of the turn.
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        head = tok.apply_chat_template(messages[:i], tokenize=True, add_generation_prompt=True, return_dict=True)
        start = len(head["input_ids"])
        assert out["labels"][start - 1] == IGNORE_INDEX  # the "\n" after "<|im_start|>assistant"
        assert out["labels"][start] == out["input_ids"][start]


def test_every_untrained_token_is_outside_assistant_turns(tok):
    out = tokenize_chat(tok, CHAT)
    n_trained = sum(lab != IGNORE_INDEX for lab in out["labels"])
    expected = sum(len(tok(m["content"] + "<|im_end|>", add_special_tokens=False)["input_ids"])
                   for m in CHAT if m["role"] == "assistant")
    assert n_trained == expected


def test_truncation(tok):
    full = tokenize_chat(tok, CHAT)
    cut = tokenize_chat(tok, CHAT, max_length=10)
    assert cut["input_ids"] == full["input_ids"][:10] and cut["labels"] == full["labels"][:10]


def test_prompt_completion_plain_and_conversational(tok):
    out = tokenize_prompt_completion(tok, "2 + 2 =", " 4")
    n_prompt = len(tok("2 + 2 =")["input_ids"])
    assert all(lab == IGNORE_INDEX for lab in out["labels"][:n_prompt])
    assert out["labels"][n_prompt:] == out["input_ids"][n_prompt:]
    assert out["input_ids"][-1] == tok.eos_token_id
    conv = tokenize_prompt_completion(tok, CHAT[:1], CHAT[1:2])
    assert conv == tokenize_chat(tok, CHAT[:2])


def test_text_trains_every_token(tok):
    out = tokenize_text(tok, "Hello, world!")
    assert out["labels"] == out["input_ids"] and out["input_ids"][-1] == tok.eos_token_id


@pytest.mark.parametrize("bad, needle", [
    ([], "non-empty list"),
    ([{"role": "user"}], "'role' and 'content'"),
    ([{"role": "robot", "content": "x"}], "is not one of"),
    ([{"role": "user", "content": "hi"}], "no assistant message"),
])
def test_bad_messages_name_the_fix(bad, needle):
    with pytest.raises(AnemoneError, match=needle):
        tokenize_chat(tiny_tokenizer(), bad)
