"""Our DKIM verifier (relate.mailauth.dkimverify) against dkimpy over messages dkimpy signed and that were then
mutated byte by byte: always dkimpy's result, or a refusal for one of RFC 6376's rules dkimpy does not check."""

from __future__ import annotations

import contextlib

import dkim as dkimpy
from hypothesis import assume, example, given
from hypothesis import strategies as st

from relate.mailauth import dkimverify
from relate.mailauth.verdict import header_section
from tests.dkimpy_reference import compare, sign

_NAMES = [b"From", b"To", b"Subject", b"Date", b"Cc", b"X-Thing", b"from", b"SUBJECT"]
_PIECES = [b"a", b"b@remote.example", b" ", b"  ", b"\t", b"\r\n ", b"\r\n\t", b":", b";", b"=", b"\xc3\xa9"]
_BODY = [b"line", b" ", b"\t", b"  \t ", b"\r\n", b"\r\n\r\n", b"x", b"\n", b"\r", b".", b"=20"]
_INSERTS = [b" ", b"\t", b"\r\n", b"\n", b"\r\n ", b"x", b":", b";", b"=", b"A", b"From: x@y\r\n", b"\r\n\r\n"]


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    fields = draw(
        st.lists(st.tuples(st.sampled_from(_NAMES), st.lists(st.sampled_from(_PIECES), max_size=8)), max_size=6)
    )
    head = b"From: carol@remote.example\r\n" + b"".join(
        name + b":" + b"".join(value).replace(b"\r\n", b"\r\n ") + b"\r\n" for name, value in fields
    )
    body = b"".join(draw(st.lists(st.sampled_from(_BODY), max_size=30)))
    return head + b"\r\n" + body


@st.composite
def mutations(draw: st.DrawFn, message: bytes) -> bytes:
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(message)))
        cut = draw(st.integers(0, 2))
        message = message[:at] + draw(st.sampled_from([b"", *_INSERTS])) + message[at + cut :]
    return message


@given(
    messages(),
    st.sampled_from(["rsa", "ed25519"]),
    st.tuples(st.sampled_from([b"simple", b"relaxed"]), st.sampled_from([b"simple", b"relaxed"])),
    st.lists(st.sampled_from([b"to", b"subject", b"date", b"cc", b"x-thing", b"from", b"x-absent"]), max_size=6),
    st.booleans(),
    st.data(),
)
@example(b"From: a@remote.example\r\n\r\n\r\n \r\n", "rsa", (b"relaxed", b"relaxed"), [], True, None)
def test_same_result_as_dkimpy(
    message: bytes,
    kind: str,
    canon: tuple[bytes, bytes],
    include: list[bytes],
    length: bool,
    data: st.DataObject | None,
) -> None:
    """Whatever is changed after signing, our verifier's result is dkimpy's (compare holds them to it)."""
    try:
        signed = sign(message, kind, canon, [b"from", *include], length)
    except dkimpy.DKIMException:
        assume(False)
    compare(signed, kind=kind)
    if data is not None:
        compare(data.draw(mutations(signed)), kind=kind)


@given(st.binary(max_size=2000), st.binary(max_size=300))
@example(b"DKIM-Signature: v=1; a=rsa-sha256; b=; bh=\r\n\r\n", b"p=")
def test_any_bytes(message: bytes, record: bytes) -> None:
    """Any message and key record: a result or one of the verifier's own errors, never anything else."""
    verifier = dkimverify.Verifier(message)
    with contextlib.suppress(dkimverify.Failed, dkimverify.Permerror):
        verifier.verify(0, record)


@given(st.binary(max_size=2000))
@example(b"\r\nFrom: a\r\n\r\nbody")
@example(b"From: a\r\n\nX: b\r\n\r\nbody\n")
@example(b"From: a\r\n X\r\n\r\n\r\n\r\nbody\r\n")
def test_header_read_once_is_the_same_reading(message: bytes) -> None:
    """A message read from its header section read beforehand (relate.mailauth.verdict's path) is the message
    read whole."""
    section = header_section(message)
    header = dkimverify.read_header(section)
    once = header.with_body(message)
    if once is not None:
        assert once == dkimverify.read_message(message)
    assert dkimverify.Verifier(message, header).message == dkimverify.read_message(message)
