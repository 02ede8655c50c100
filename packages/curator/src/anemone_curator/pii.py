"""PII detection and redaction: emails, phone numbers, IP addresses, credit-card numbers (Luhn-checked).

Order matters: card numbers are matched before phone numbers, since a spaced 16-digit card contains
phone-shaped runs. Counts per kind go to the stage statistics and onto the document (`pii`).
"""

from __future__ import annotations

import ipaddress
import re

from anemone_curator.stage import Doc, Mapper

EMAIL_RE = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
CARD_RE = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
IPV4_RE = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
IPV6_RE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
PHONE_RE = re.compile(
    r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?!\w)(?![ .-]\d)"
)
TOKENS = {
    "email": "<EMAIL>",
    "credit_card": "<CREDIT_CARD>",
    "ip_address": "<IP_ADDRESS>",
    "phone": "<PHONE>",
}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _is_ip(match: str) -> bool:
    if ":" in match and sum(1 for group in match.split(":") if group) < 3:
        return False  # `a::b`-shaped strings are valid IPv6 but far more often something else
    try:
        ipaddress.ip_address(match)
    except ValueError:
        return False
    return True


def find_pii(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) spans, non-overlapping, in text order."""
    spans: list[tuple[str, int, int]] = []
    taken = bytearray(len(text))

    def add(kind: str, pattern: re.Pattern[str], check=None) -> None:
        for m in pattern.finditer(text):
            if any(taken[m.start() : m.end()]) or (check and not check(m.group())):
                continue
            spans.append((kind, m.start(), m.end()))
            taken[m.start() : m.end()] = b"\x01" * (m.end() - m.start())

    add("email", EMAIL_RE)
    add("credit_card", CARD_RE, _is_card)
    add("ip_address", IPV4_RE, _is_ip)
    add("ip_address", IPV6_RE, _is_ip)
    add("phone", PHONE_RE)
    return sorted(spans, key=lambda s: s[1])


def redact(text: str, spans: list[tuple[str, int, int]]) -> str:
    out, pos = [], 0
    for kind, start, end in spans:
        out += [text[pos:start], TOKENS[kind]]
        pos = end
    out.append(text[pos:])
    return "".join(out)


class PiiRedactor(Mapper):
    """Count PII per kind (stats and `doc["pii"]`); with `redact`, replace each span by a `<KIND>` token."""

    name = "pii"

    def __init__(self, redact: bool = True, kinds: list[str] | None = None) -> None:
        super().__init__()
        self.redact = redact
        self.kinds = set(kinds) if kinds else set(TOKENS)

    def map(self, doc: Doc) -> Doc | None:
        spans = [s for s in find_pii(doc["text"]) if s[0] in self.kinds]
        if not spans:
            return doc
        counts: dict[str, int] = {}
        for kind, _, _ in spans:
            counts[kind] = counts.get(kind, 0) + 1
            self.stats.counters[kind] += 1
        self.stats.counters["docs_with_pii"] += 1
        doc["pii"] = counts
        if self.redact:
            doc["text"] = redact(doc["text"], spans)
        return doc
