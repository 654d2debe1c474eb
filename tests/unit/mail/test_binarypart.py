"""Binary parts of an APPENDed message become base64 (relate.mail.binarypart), losing nothing."""

from __future__ import annotations

import base64

from relate.mail import transfer
from relate.mail.binarypart import encode_binary_parts
from relate.mail.mime import parse_message


def _leaves(raw: bytes) -> list[tuple[str, bytes]]:
    """(transfer encoding, decoded content) of every leaf part, in order."""
    out = []
    stack = [parse_message(raw).bodystructure]
    while stack:
        node = stack.pop()
        if node.get("parts"):
            stack.extend(reversed(node["parts"]))
            continue
        start, end, encoding = node["body_start"], node["end"], node["encoding"]
        out.append((encoding, transfer.decode(raw, start, end, encoding)[0]))
    return out


def test_single_part_binary_becomes_base64() -> None:
    """A binary single-part message: the header says base64, the body is its base64 form, the octets the same."""
    raw = b"From: a@b\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00-\xe4\n\r\n\n"
    out = encode_binary_parts(raw, parse_message(raw).bodystructure)
    assert out == b"From: a@b\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"\x00-\xe4\n\r\n\n")
    assert _leaves(out) == [("base64", b"\x00-\xe4\n\r\n\n")]


def test_only_binary_parts_change_and_long_bodies_are_wrapped() -> None:
    """In a multipart, other parts stay byte for byte; a long binary body is cut into 76-character lines."""
    payload = bytes(range(256)) * 10
    raw = (
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\npreamble\r\n'
        b"--x\r\nContent-Type: text/plain\r\n\r\nwords \xe4\r\n"
        b"--x\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding:\r\n\tBinary\r\n\r\n"
        + payload
        + b"\r\n--x--\r\nepilogue\r\n"
    )
    out = encode_binary_parts(raw, parse_message(raw).bodystructure)
    assert out is not None
    assert out.startswith(raw[: raw.index(b"--x\r\nContent-Type: application")])
    assert out.endswith(b"\r\n--x--\r\nepilogue\r\n")
    assert _leaves(out) == [("7bit", b"words \xe4"), ("base64", payload)]
    body = out[out.index(b"base64\r\n\r\n") + 10 : out.index(b"\r\n--x--")]
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))


def test_nothing_binary_changes_nothing() -> None:
    """A message without binary parts is left alone (None: nothing to store differently)."""
    raw = b"Content-Transfer-Encoding: 8bit\r\n\r\n\xe4\xf6\xfc\r\n"
    assert encode_binary_parts(raw, parse_message(raw).bodystructure) is None
