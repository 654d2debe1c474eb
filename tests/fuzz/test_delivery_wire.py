"""The delivery daemon's wire form (relate.queue.client): what a submitted message becomes on the way out.

Whatever bytes a user submitted, the wire form has CRLF line ends only and is
what aiosmtplib itself would have put on the wire (so a DKIM signature over it
verifies at the receiver), and dot-stuffing is undone exactly by a receiver.
"""

from __future__ import annotations

import re

from aiosmtplib.protocol import normalize_message_line_endings
from hypothesis import example, given
from hypothesis import strategies as st

from relate.queue.client import dot_stuffed, wire_form

# Bytes where line ends and dots are common enough to matter.
messages = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"a", b"\xff", b" ", b"\x00"])).map(b"".join)


def unstuffed(body: bytes) -> bytes:
    """What a receiver makes of a DATA body (RFC 5321 §4.5.2): the leading dot of each line removed."""
    return re.sub(rb"(?m)^\.", b"", body)


@given(messages | st.binary())
@example(b"one\rtwo\nthree\r\n.four\r\n..five\r\nsix")  # the reproducer: bare CR and LF, dots, no final CRLF
@example(b"")
@example(b"\r")
@example(b".\r\n")
@example(b"\r\r\n\n")
def test_wire_form_is_crlf_only_and_what_aiosmtplib_sends(raw: bytes) -> None:
    """Only CRLF line ends, a final CRLF, unchanged by a second pass, equal to aiosmtplib's normalisation."""
    wire = wire_form(raw)
    assert wire.endswith(b"\r\n")
    assert wire.count(b"\r") == wire.count(b"\n") == wire.count(b"\r\n")
    assert wire_form(wire) == wire
    assert wire == normalize_message_line_endings(raw)
    assert wire.replace(b"\r\n", b"") == raw.replace(b"\r\n", b"").replace(b"\r", b"").replace(b"\n", b"")


@given(messages | st.binary())
@example(b".\r\n")
@example(b"a\r\n.\r\nb")
def test_dot_stuffing_is_undone_by_the_receiver_and_never_ends_data_early(raw: bytes) -> None:
    """A receiver's unstuffing gives back the wire form; no line of the body is a lone dot (the end of DATA)."""
    wire = wire_form(raw)
    body = dot_stuffed(wire)
    assert unstuffed(body) == wire
    assert b"\r\n.\r\n" not in body
    assert not body.startswith(b".\r\n")
