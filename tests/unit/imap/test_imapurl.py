"""IMAP URLs of messages (RFC 5092) as CATENATE names them (relate.imap.imapurl)."""

from __future__ import annotations

import pytest

from relate.imap.imapurl import MessageUrl, UrlError, parse
from relate.imap.parser import Section


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/INBOX/;UID=20", MessageUrl(None, None, "INBOX", None, 20, None, None)),
        ("/INBOX;uidvalidity=7/;uid=20/", MessageUrl(None, None, "INBOX", 7, 20, None, None)),
        (
            "/a%20b/c%C3%A9/;UID=1/;SECTION=1.2.MIME/;PARTIAL=0.1024",
            MessageUrl(None, None, "a b/cé", None, 1, Section((1, 2), "MIME"), (0, 1024)),
        ),
        (
            "imap://bob%40example.com;AUTH=*@Mail.Example.COM:993/Sent/;UID=3/;section=header.fields%20(subject)",
            MessageUrl(
                "bob@example.com", "mail.example.com", "Sent", None, 3, Section((), "HEADER.FIELDS", ("SUBJECT",)), None
            ),
        ),
        ("/x/;UID=4/;PARTIAL=100", MessageUrl(None, None, "x", None, 4, None, (100, None))),
    ],
)
def test_message_urls(url: str, expected: MessageUrl) -> None:
    """Relative and absolute URLs give the mailbox (decoded), UIDVALIDITY, UID, section and partial range."""
    assert parse(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "INBOX/;UID=1",  # not an absolute path
        "/INBOX",  # no UID
        "/INBOX/;UID=0",
        "/INBOX/;UID=4294967296",
        "/INBOX/;SECTION=1/;UID=1",  # out of order
        "/INBOX/;UID=1/;UID=2",
        "/INBOX/;UID=1/;URLAUTH=anonymous:internal:91354a473744909de610943775f92038",
        "/INBOX/;UID=1/;EXPIRE=2030-01-01T00:00:00Z",
        "/INBOX;UIDVALIDITY=x/;UID=1",
        "/INBOX;FOO=1/;UID=1",
        "/%FF/;UID=1",  # not UTF-8
        "/IN BOX/;UID=1",
        "/INBOX/;UID=1/;SECTION=HEADER.FIELDS",  # no field list
        "/INBOX/;UID=1/;PARTIAL=1.0",
        "imap://host",
        "imap:/INBOX/;UID=1",
        "/INBOX/;UID=1/;SECTION=1\u00e9",
        "/" + "a" * 5000 + "/;UID=1",
        "/INBOX?SUBJECT%20x",
    ],
)
def test_refused_urls(url: str) -> None:
    """What is not the URL of a message (or part) this server resolves is UrlError, never another exception."""
    with pytest.raises(UrlError):
        parse(url)
