"""Property tests of what RETR and TOP send for any stored bytes: dot-stuffing undone gives the message back."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from relate.pop3.responses import _line_starts_with_dot, to_wire, top


def crlf(raw: bytes) -> bytes:
    """``raw`` with CRLF line ends and a final CRLF, as POP3 sizes and sends it."""
    data = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return data if not data or data.endswith(b"\r\n") else data + b"\r\n"


def unstuff(wire: bytes) -> bytes:
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in wire.split(b"\r\n")[:-1])


# Bytes with many line ends, dots and bare CRs: what dot-stuffing and line ends are about.
_MESSAGE = st.lists(st.sampled_from([b".", b"\r\n", b"\n", b"\r", b"..", b"a", b"\r\n.\r\n", b" "]), max_size=200).map(
    b"".join
) | st.binary(max_size=2000)


@given(_MESSAGE)
@example(b".")
@example(b"\r\n.\r\n")
@example(b"a\r\r\n.b")
@example(b"." * 100 + b"\n.")
def test_to_wire(raw: bytes) -> None:
    """No line is a lone '.', dot-stuffing undone gives the CRLF message back, and the CRLF fast path agrees."""
    wire = to_wire(raw)
    if not raw:
        assert wire == b""
        return
    assert wire.endswith(b"\r\n")
    assert b"\r\n.\r\n" not in b"\r\n" + wire
    assert unstuff(wire) == crlf(raw)
    assert to_wire(crlf(raw), crlf=True) == wire


@given(_MESSAGE)
def test_dot_search(raw: bytes) -> None:
    """The fast search for a line starting with '.' agrees with the plain one on CRLF text."""
    data = crlf(raw)
    assert _line_starts_with_dot(data) == (b"\r\n." in data)


@given(_MESSAGE, st.integers(min_value=0, max_value=300))
@example(b"\r\nbody\r\n", 0)
@example(b"Subject: x\r\n\r\n", 5)
@example(b"Subject: x\r\n\r\na\r\nb\r\n", 10**10)
def test_top(raw: bytes, lines: int) -> None:
    """TOP sends the head, the blank line, and the first n body lines: a prefix of RETR's, ending a line."""
    wire = to_wire(raw)
    sent = top(wire, lines)
    assert wire.startswith(sent)
    assert not sent or sent.endswith(b"\r\n")
    cut = -2 if wire.startswith(b"\r\n") else wire.find(b"\r\n\r\n")
    if cut == -1:
        assert sent == wire  # no body: all of it is head
        return
    body = wire[cut + 4 :]
    assert sent == wire[: cut + 4] + b"".join(line + b"\r\n" for line in body.split(b"\r\n")[:-1][:lines])
