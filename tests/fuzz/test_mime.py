"""Fuzzing relate.mail.mime: parse_message and part_content never raise, keep their invariants, and round-trip parts."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from relate.mail import limits
from relate.mail.mime import ParsedMessage, parse_message, part_content

# Issue 12's reproducers and the inputs that once broke the parser.
SUBJECT_16K_WORDS = (
    b"From: a@example.org\r\nSubject: "
    + b"\r\n ".join(b"=?utf-8?q?caf=C3=A9?=" for _ in range(16_000))
    + b"\r\n\r\nbody\r\n"
)
FROM_500_PARENS = b"From: a <b" + b"(" * 500 + b"\r\n\r\nbody\r\n"
DEEP_MULTIPART = b"".join(
    b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(200)
)
DEEP_RFC822 = b"Content-Type: message/rfc822\r\n\r\n" * 200 + b"Subject: inner\r\n\r\nx"
CT_COMMENTS = b"Content-Type: text/plain; " + b"(" * 3000 + b"\r\n\r\nx"
PARAM_SECTIONS = b"Content-Type: text/plain; name*99999999999999999999999=x; name*0*=''%ZZ\r\n\r\nx"
MARKED_SECTION = b"Content-Type: text/html\r\n\r\n<p>before</p><![foo[ x ]]><p>after</p>"
# Delimiter candidates that are not delimiters: each "--b" followed by a long run of transport padding and
# then more text (the padding is read once per candidate, never again).
PADDED_CANDIDATES = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + b"\n--b" + (b" " * 3000 + b"x\n--b") * 300


def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    stack = [node]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.get("parts", []))
        if "message" in node:
            stack.append(node["message"]["body"])


def check(raw: bytes, parsed: ParsedMessage) -> None:
    """The invariants every parse keeps, whatever the input."""
    for node in nodes(parsed.bodystructure):
        assert 0 <= node["header_start"] <= node["body_start"] <= node["end"] <= len(raw)
    assert parsed.bodystructure["header_start"] == 0
    assert parsed.bodystructure["end"] == len(raw)
    assert parsed.header_end == parsed.bodystructure["body_start"]
    assert len(parsed.text) <= limits.MAX_SEARCH_TEXT
    assert set(parsed.limits) <= limits.NOTES
    assert list(parsed.limits) == sorted(set(parsed.limits))
    json.dumps(parsed.to_json())
    for attachment in parsed.attachments:
        content = part_content(raw, attachment.part)
        assert content is not None
        assert len(content) == attachment.size  # the counted size is the decoded size


@given(st.binary(max_size=4096))
@example(SUBJECT_16K_WORDS)
@example(FROM_500_PARENS)
@example(DEEP_MULTIPART)
@example(DEEP_RFC822)
@example(CT_COMMENTS)
@example(PARAM_SECTIONS)
@example(MARKED_SECTION)
@example(PADDED_CANDIDATES)
def test_arbitrary_bytes(raw: bytes) -> None:
    """Any bytes parse without raising, with ordered offsets and attachment sizes equal to their content."""
    check(raw, parse_message(raw))


# --- MIME-shaped messages ----------------------------------------------------------------------------

FIELD_VALUES = st.sampled_from(
    [
        "Alice <alice@example.org>",
        '"Smith, John" <john@example.org>, jane@example.org',
        "=?utf-8?q?caf=C3=A9?= <c@example.org>",
        "Team: a@example.org, b@example.org;",
        "a <b" + "(" * 50,
        "(" * 40 + "x" + ")" * 40 + " a@b.example",
        '"unterminated <x@y>',
        "=?utf-8?b?4oKs?= =?utf-8?q?=E2=82?= =?bogus?q?x?=",
        "Mon, 7 Jul 2025 09:15:00 +0200",
        "<a@b> <c@d>",
        "",
    ]
)


@dataclass
class Leaf:
    data: bytes
    encoding: str
    content_type: str


def encode(data: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        return base64.encodebytes(data).replace(b"\n", b"\r\n").rstrip(b"\r\n")
    if encoding == "quoted-printable":
        return binascii.b2a_qp(data, istext=False).replace(b"\n", b"\r\n")
    return data


@st.composite
def leaves(draw: st.DrawFn) -> tuple[bytes, list[Leaf]]:
    encoding = draw(st.sampled_from(["7bit", "base64", "quoted-printable"]))
    data = draw(st.binary(max_size=300))
    if encoding == "7bit":  # a 7bit body must not hold a delimiter line or a line break issue of its own
        data = bytes(b for b in data if 0x20 <= b < 0x7F and b != 0x2D)
    content_type = draw(st.sampled_from(["text/plain; charset=utf-8", "text/html", "application/pdf", "image/png"]))
    disposition = draw(st.sampled_from(["", 'Content-Disposition: attachment; filename="a b.pdf"\r\n']))
    extra = "".join(
        f"{name}: {draw(FIELD_VALUES)}\r\n"
        for name in draw(st.lists(st.sampled_from(["X-A", "Subject", "From"]), max_size=3))
    )
    head = f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: {encoding}\r\n{disposition}{extra}".encode()
    return head + b"\r\n" + encode(data, encoding), [Leaf(data, encoding, content_type)]


def multiparts(children: st.SearchStrategy[tuple[bytes, list[Leaf]]]) -> st.SearchStrategy[tuple[bytes, list[Leaf]]]:
    @st.composite
    def build(draw: st.DrawFn) -> tuple[bytes, list[Leaf]]:
        parts = draw(st.lists(children, min_size=1, max_size=4))
        # RFC 2046 §5.1.1 bchars after a digest of the content: unique in the tree, absent from the parts.
        digest = hashlib.sha1(b"|".join(part for part, _ in parts), usedforsecurity=False).hexdigest()
        boundary = f"=_{digest}" + draw(st.from_regex(r"[A-Za-z0-9'()+_,./:=? -]{0,20}[A-Za-z0-9]", fullmatch=True))
        subtype = draw(st.sampled_from(["mixed", "alternative", "related"]))
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part, _ in parts)
        head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\npreamble\r\n'.encode()
        return head + body + b"--" + boundary.encode() + b"--\r\n", [leaf for _, found in parts for leaf in found]

    return build()


MESSAGES = st.recursive(leaves(), multiparts, max_leaves=8)


@given(
    MESSAGES,
    st.lists(
        st.tuples(st.sampled_from(["From", "To", "Cc", "Subject", "Date", "References"]), FIELD_VALUES), max_size=5
    ),
)
def test_mime_shaped_messages(message: tuple[bytes, list[Leaf]], fields: list[tuple[str, str]]) -> None:
    """Generated MIME trees parse into as many leaves as were built, and each leaf's content round-trips."""
    body, built = message
    raw = "".join(f"{name}: {value}\r\n" for name, value in fields).encode() + body
    parsed = parse_message(raw)
    check(raw, parsed)
    found = [node for node in nodes(parsed.bodystructure) if "parts" not in node]
    assert len(found) == len(built)
    numbers = _leaf_numbers(parsed.bodystructure)
    assert len(numbers) == len(built)
    for number, leaf in zip(numbers, built, strict=True):
        assert part_content(raw, number) == leaf.data


def _leaf_numbers(structure: dict[str, Any]) -> list[str]:
    """IMAP part numbers of the leaves, in document order (RFC 9051 §6.4.5)."""
    out: list[str] = []
    stack: list[tuple[dict[str, Any], str]] = [(structure, "")]
    while stack:
        node, number = stack.pop()
        if "parts" in node:
            stack.extend(
                (child, f"{number}.{i}" if number else str(i))
                for i, child in reversed(list(enumerate(node["parts"], 1)))
            )
        else:
            out.append(number or "1")
    return out


@given(MESSAGES, st.binary(max_size=20), st.integers(min_value=0))
def test_mutated_mime_messages(message: tuple[bytes, list[Leaf]], junk: bytes, where: int) -> None:
    """Generated MIME trees with bytes spliced in anywhere still parse within the invariants."""
    raw = message[0]
    cut = where % (len(raw) + 1)
    raw = raw[:cut] + junk + raw[cut:]
    check(raw, parse_message(raw))


@given(st.binary(max_size=2048), st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){0,3}", fullmatch=True))
def test_part_content_of_any_part(raw: bytes, part: str) -> None:
    """part_content of any part number of any bytes is bytes or None, never an error."""
    content = part_content(raw, part)
    assert content is None or isinstance(content, bytes)
