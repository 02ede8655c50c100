"""Tokenize chats with the tokenizer's own chat template; train only on what the assistant says.

The template is rendered once for the whole conversation and tokenized once (so `input_ids` equal
`tokenizer.apply_chat_template(messages, tokenize=True)` exactly). The assistant spans are found in
character space by rendering prefixes of the conversation: for assistant turn i,

    start = len(render(messages[:i], add_generation_prompt=True))   # after "<|im_start|>assistant\n"
    end   = len(render(messages[:i + 1]))                           # after "...<|im_end|>\n"

and trailing whitespace is cut from the span (the "\n" after the end-of-turn token is template glue that
generation never produces). Tokens whose characters fall inside a span get labels; all others get -100.
This works for any template whose renderings of prefixes are prefixes of the full rendering, which we check.
"""

from __future__ import annotations

from typing import Any

from anemone_core.errors import AnemoneError

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant", "tool")


def check_messages(messages: Any, where: str = "row") -> list[dict[str, str]]:
    """Validate one conversation: a non-empty list of {role, content} with at least one assistant turn."""
    if not isinstance(messages, list) or not messages:
        raise AnemoneError(
            f"{where}: 'messages' = {messages!r:.80} must be a non-empty list of {{'role', 'content'}} dicts: "
            "write each row as {\"messages\": [{\"role\": \"user\", \"content\": ...}, "
            "{\"role\": \"assistant\", \"content\": ...}]}"
        )
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise AnemoneError(f"{where}: messages[{j}] = {m!r:.80} needs the keys 'role' and 'content': add them")
        if m["role"] not in ROLES:
            raise AnemoneError(f"{where}: messages[{j}].role = {m['role']!r} is not one of {ROLES}: fix the role")
        if not isinstance(m["content"], str):
            raise AnemoneError(f"{where}: messages[{j}].content must be a string, got {type(m['content']).__name__}")
    if not any(m["role"] == "assistant" for m in messages):
        raise AnemoneError(f"{where}: no assistant message, so nothing would be trained: add an assistant turn")
    return messages


def _render(tokenizer: Any, messages: list[dict], add_generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise AnemoneError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template, so chat data cannot be "
            "formatted: use a model folder with chat_template.jinja (an instruct model), or prompt/completion data"
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_char_spans(tokenizer: Any, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character spans of each assistant turn."""
    text = _render(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        head = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        upto = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not text.startswith(upto) or not upto.startswith(head):
            raise AnemoneError(
                "the chat template does not render conversation prefixes as prefixes of the full conversation, "
                "so assistant tokens cannot be located: use prompt/completion data for this model"
            )
        spans.append((len(head), len(upto.rstrip())))
    return text, spans


def _encode_with_offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def tokenize_chat(tokenizer: Any, messages: list[dict], max_length: int | None = None) -> dict[str, list[int]]:
    """Token ids of the conversation under the tokenizer's chat template, with labels -100 on every token
    that is not assistant content or the assistant's end-of-turn token. Right-truncated to `max_length`."""
    check_messages(messages)
    text, spans = assistant_char_spans(tokenizer, messages)
    ids, offsets = _encode_with_offsets(tokenizer, text)
    labels = [IGNORE_INDEX] * len(ids)
    k = 0
    for t, (a, b) in enumerate(offsets):
        while k < len(spans) and spans[k][1] <= a:
            k += 1
        # A token is trained when its characters lie inside an assistant span (b > a skips empty offsets).
        if k < len(spans) and b > a and a >= spans[k][0] and b <= spans[k][1]:
            labels[t] = ids[t]
    return _truncate(ids, labels, max_length)


def tokenize_prompt_completion(
    tokenizer: Any, prompt: str | list[dict], completion: str | list[dict], max_length: int | None = None
) -> dict[str, list[int]]:
    """Prompt/completion pairs. Strings are plain text (completion + end-of-sequence trained); lists of
    messages (TRL's conversational form) are joined and tokenized with the chat template."""
    if isinstance(prompt, list) and isinstance(completion, list):
        return tokenize_chat(tokenizer, prompt + completion, max_length)
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise AnemoneError(
            f"prompt/completion must both be strings or both lists of messages, got {type(prompt).__name__} and "
            f"{type(completion).__name__}: make the row's 'prompt' and 'completion' the same kind"
        )
    p_ids = list(tokenizer(prompt)["input_ids"])
    c_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        c_ids.append(tokenizer.eos_token_id)
    return _truncate(p_ids + c_ids, [IGNORE_INDEX] * len(p_ids) + c_ids, max_length)


def tokenize_text(tokenizer: Any, text: str, max_length: int | None = None) -> dict[str, list[int]]:
    """Raw text for pretraining: every token is trained; an end-of-sequence token closes the document."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return _truncate(ids, list(ids), max_length)


def _truncate(ids: list[int], labels: list[int], max_length: int | None) -> dict[str, list[int]]:
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels}
