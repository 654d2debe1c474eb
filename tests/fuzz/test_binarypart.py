"""Fuzzing relate.mail.binarypart: whatever the message, converting its binary parts to base64 never raises
and changes no part's decoded content (RFC 3516 §4.3: no loss of data)."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from relate.mail import transfer
from relate.mail.binarypart import encode_binary_parts
from relate.mail.mime import parse_message


def _contents(raw: bytes) -> list[bytes]:
    """The decoded content of every leaf, in order (message/rfc822 parts looked into)."""
    out = []
    stack: list[dict[str, Any]] = [parse_message(raw).bodystructure]
    while stack:
        node = stack.pop()
        if node.get("parts"):
            stack.extend(reversed(node["parts"]))
        elif node.get("message") is not None:
            stack.append(node["message"]["body"])
        else:
            out.append(transfer.decode(raw, node["body_start"], node["end"], node["encoding"])[0])
    return out


_HEADERS = st.sampled_from(
    [
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n",
        b"Content-Transfer-Encoding: BINARY\r\n",
        b"Content-Transfer-Encoding:\r\n binary\r\n",
        b"Content-Type: text/plain\r\n",
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: binary\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
    ]
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A multipart message whose parts have random headers and bodies (NUL, bare CR and LF included)."""
    parts = draw(st.lists(st.tuples(_HEADERS, st.binary(max_size=200)), min_size=1, max_size=5))
    body = b"".join(b"--b\r\n" + head + b"\r\n" + data + b"\r\n" for head, data in parts)
    return b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n' + body + b"--b--\r\n"


SINGLE = b"Content-Transfer-Encoding: binary\r\n\r\n\x00-\xe4\n\r\n\n"  # imaptest append-binary's message
NESTED = b"Content-Type: message/rfc822\r\n\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x01"


@given(st.one_of(messages(), st.binary(max_size=600)))
@example(SINGLE)
@example(NESTED)
@example(b"Content-Transfer-Encoding: binary\r\n")
def test_encoding_binary_parts_keeps_every_part(raw: bytes) -> None:
    """The converted message decodes, part for part, to what the original did, and has no NUL in a binary part."""
    converted = encode_binary_parts(raw, parse_message(raw).bodystructure)
    if converted is None:
        return
    assert _contents(converted) == _contents(raw)
    assert len(_contents(converted)) == len(_contents(raw))
