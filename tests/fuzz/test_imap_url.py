"""Fuzzing relate.imap.imapurl.parse: whatever a client sends as a CATENATE URL, only UrlError comes out,
and what is accepted names a message by UID with a section that parses back."""

from __future__ import annotations

import contextlib

from hypothesis import example, given
from hypothesis import strategies as st

from relate.imap import limits
from relate.imap.imapurl import UrlError, parse

_TOKENS = st.sampled_from(
    [
        "/", ";", "=", "%", "%20", "%C3%A9", "%FF", "%4", "@", ":", "imap://", "bob%40example.com", "host", ":993",
        ";AUTH=*", "INBOX", "Sent/Sub", ";UIDVALIDITY=", "/;UID=", "/;SECTION=", "/;PARTIAL=", "/;URLAUTH=",
        "1", "0", "4294967295", "4294967296", ".", "HEADER", "TEXT", "MIME", "HEADER.FIELDS%20(SUBJECT)", "1.2",
        "\x00", "\u00e9", " ", "?", "#",
    ]
)  # fmt: skip


@given(st.one_of(st.text(max_size=200), st.lists(_TOKENS, max_size=25).map("".join)))
@example("/INBOX/;UID=1/;SECTION=" + "1." * 40 + "1")
@example("/" + "%" * 3000 + "/;UID=1")
@example("imap://" + "@" * 5000)
@example("/a" * 3000 + "/;UID=1")
def test_parse_raises_only_url_error(url: str) -> None:
    """Any text parses to a message URL or raises UrlError."""
    with contextlib.suppress(UrlError):
        found = parse(url)
        assert len(url) <= limits.MAX_URL_LENGTH
        assert 1 <= found.uid <= 0xFFFFFFFF
        assert found.mailbox
        if found.partial is not None:
            assert found.partial[1] is None or found.partial[1] >= 1
