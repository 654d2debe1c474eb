"""The IMAP parser's QUOTA commands (RFC 9208: GETQUOTA, GETQUOTAROOT, SETQUOTA): only ParseError, and round trips.

Commands are assembled from the quota grammar's own tokens (resource names,
number64 at and past its bounds, parentheses, strings and literals), which
reaches the SETQUOTA list parser far more often than random bytes do; any
well-formed SETQUOTA a client can write parses back to what it said.
"""

from __future__ import annotations

import contextlib

from hypothesis import example, given
from hypothesis import strategies as st

from relate.imap import limits
from relate.imap.errors import ParseError
from relate.imap.parser import Literal, MailboxCommand, Part, QuotaRoot, SetQuota, parse
from relate.mail.imapwire import astring

_TOKENS = st.sampled_from(
    [
        b" ", b"(", b")", b'""', b'"', b"STORAGE", b"MESSAGE", b"MAILBOX", b"ANNOTATION-STORAGE", b"storage",
        b"0", b"1", b"512", b"9223372036854775807", b"9223372036854775808", b"99999999999999999999",
        b"-1", b"INBOX", b"user.bob", b"\\", b"{3}", b"\x00", b"\xff", b"NIL", b"*",
    ]
)  # fmt: skip
_VERBS = st.sampled_from([b"a GETQUOTA ", b"a GETQUOTAROOT ", b"a SETQUOTA ", b'a SETQUOTA "" ('])
_LINES = st.one_of(st.binary(max_size=80), st.lists(_TOKENS, max_size=40).map(b"".join))


@st.composite
def commands(draw: st.DrawFn) -> list[Part]:
    """A quota verb, then line pieces with (sometimes) literals between them, as read_command returns them."""
    parts: list[Part] = [draw(_VERBS) + draw(_LINES)]
    for _ in range(draw(st.integers(0, 2))):
        data = draw(st.binary(max_size=20))
        parts.append(Literal(data, size=len(data)))
        parts.append(draw(_LINES))
    return parts


@given(commands(), st.booleans())
@example([b'a SETQUOTA "" (' + b" ".join(b"STORAGE 1" for _ in range(limits.MAX_QUOTA_RESOURCES + 1)) + b")"], False)
@example([b'a SETQUOTA "" (STORAGE 9223372036854775808)'], False)
@example([b'a SETQUOTA "" (STORAGE 1 MESSAGE)'], False)
@example([b"a GETQUOTA ", Literal(b"\xff\x00", size=2), b""], True)
def test_quota_commands_raise_only_parse_error(parts: list[Part], utf8: bool) -> None:
    """Whatever follows a quota verb, the command parses (into its own type) or raises ParseError."""
    with contextlib.suppress(ParseError):
        cmd = parse(parts, utf8=utf8)
        assert isinstance(cmd, (QuotaRoot, MailboxCommand, SetQuota))
        if isinstance(cmd, SetQuota):
            assert len(cmd.limits) <= limits.MAX_QUOTA_RESOURCES
            assert all(0 <= value < 2**63 for _, value in cmd.limits)


_RESOURCE = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ-", min_size=1, max_size=20)


@given(
    st.text(max_size=30).filter(lambda t: "\x00" not in t),
    st.lists(st.tuples(_RESOURCE, st.integers(0, 2**63 - 1)), max_size=limits.MAX_QUOTA_RESOURCES),
)
def test_setquota_round_trips(root: str, resources: list[tuple[str, int]]) -> None:
    """A SETQUOTA written by the grammar parses back to its root, resource names and limits."""
    wire_root = astring(root, utf8=True)
    listed = " ".join(f"{name} {value}" for name, value in resources).encode()
    if wire_root.startswith(b"{"):  # a literal: the session hands it over as a part of its own
        head, _, data = wire_root.partition(b"\r\n")
        parts: list[Part] = [b"a SETQUOTA " + head.split(b"{")[0], Literal(data, size=len(data)), b" (" + listed + b")"]
    else:
        parts = [b"a SETQUOTA " + wire_root + b" (" + listed + b")"]
    cmd = parse(parts, utf8=True)
    assert isinstance(cmd, SetQuota)
    assert (cmd.root, cmd.limits) == (root, tuple(resources))
