"""Header sections read from raw bytes: where they end, which fields they hold, dates and message ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from relate.mail import headers, limits

SUBJECT = headers.FieldNames(["Subject", "From"])


def section(raw: bytes) -> tuple[int, int, int]:
    found = headers.scan(raw, 0, len(raw))
    return found.first, found.stop, found.body


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"A: 1\r\nB: 2\r\n\r\nbody", (0, 12, 14)),
        (b"A: 1\nB: 2\n\nbody", (0, 10, 11)),
        (b"A: 1\r\n folded\r\n\r\n", (0, 15, 17)),
        (b"A: 1\r\nnot a field\r\nmore", (0, 6, 6)),  # missing separator: the body starts at that line
        (b" continuation first\r\n\r\n", (0, 0, 0)),
        (b"\r\nbody", (0, 0, 2)),
        (b"A: 1\r\r\n\r\r\nbody", (0, 7, 10)),  # a line of CRs is empty
        (b"From alice Mon Jul  7 09:15:00 2025\r\nA: 1\r\n\r\n", (37, 43, 45)),  # mbox From_ line
        (b"A: 1", (0, 4, 4)),
        (b"", (0, 0, 0)),
        (b"Obsolete  : white space before the colon\r\n\r\n", (0, 42, 44)),
    ],
)
def test_section_ends(raw: bytes, expected: tuple[int, int, int]) -> None:
    """The header section ends at the first empty line or at the first line that is no field (RFC 5322 §2.1)."""
    assert section(raw) == expected


def test_fields_are_found_unfolded_and_capped() -> None:
    """Asked-for fields come out in order with their folded values; others are skipped."""
    raw = b"X-A: 1\r\nsubject : Hello\r\n  world\r\nFROM: a@example.org\r\nSubject: again\r\n\r\n"
    found = list(headers.fields(raw, headers.scan(raw, 0, len(raw)), SUBJECT))
    assert found == [("subject", b" Hello\r\n  world"), ("from", b" a@example.org"), ("subject", b" again")]
    assert headers.unfold(found[0][1]) == "Hello  world"


def test_first_line_field_is_found() -> None:
    """A field on the very first line (no line break before it) is found like any other."""
    raw = b"Subject: first line\r\n\r\n"
    assert list(headers.fields(raw, headers.scan(raw, 0, len(raw)), SUBJECT)) == [("subject", b" first line")]


def test_value_over_the_limit_is_cut_at_its_last_fold() -> None:
    """A value longer than MAX_FIELD_BYTES is cut at the last fold within the limit and the limit noted."""
    line = b" " + b"x" * 998 + b"\r\n"
    raw = b"Subject:" + line * (limits.MAX_FIELD_BYTES // len(line) + 5) + b"\r\n"
    notes: set[str] = set()
    [(_, value)] = headers.fields(raw, headers.scan(raw, 0, len(raw)), SUBJECT, notes)
    assert len(value) <= limits.MAX_FIELD_BYTES
    assert value.endswith(b"x" * 998)
    assert notes == {"field-bytes"}


def test_field_text_falls_back_and_drops_a_cut_character() -> None:
    """UTF-8 is read as UTF-8, other bytes as latin-1, and a UTF-8 character cut at the end is dropped."""
    assert headers.field_text("Grüße".encode()) == "Grüße"
    assert headers.field_text(b"Gr\xfc\xdfe") == "Grüße"
    assert headers.field_text("abc€".encode()[:-1]) == "abc"


def test_decoded_fields_for_display() -> None:
    """Every field in order, names as written, values unfolded with encoded words decoded."""
    raw = b"Subject: =?utf-8?q?caf=C3=A9?=\r\n au lait\r\nX-Odd :  spaced \t out\r\n\r\nbody"
    assert headers.decoded_fields(raw, raw.index(b"body")) == [("Subject", "café au lait"), ("X-Odd", "spaced out")]


def test_decoded_fields_stop_at_the_limit() -> None:
    """A header of more than MAX_SHOWN_FIELDS fields shows the first MAX_SHOWN_FIELDS."""
    raw = b"".join(b"X-%d: v\r\n" % i for i in range(limits.MAX_SHOWN_FIELDS + 10)) + b"\r\n"
    shown = headers.decoded_fields(raw, len(raw))
    assert len(shown) == limits.MAX_SHOWN_FIELDS
    assert shown[-1] == (f"X-{limits.MAX_SHOWN_FIELDS - 1}", "v")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mon, 7 Jul 2025 09:15:00 +0200", datetime(2025, 7, 7, 9, 15, tzinfo=timezone(timedelta(hours=2)))),
        ("7 Jul 2025 09:15 GMT", datetime(2025, 7, 7, 9, 15, tzinfo=UTC)),
        ("Fri, 11 Jul 2025 06:30:00 -0000", datetime(2025, 7, 11, 6, 30, tzinfo=UTC)),
        ("Fri, 11 Jul 25 06:30:00 EDT", datetime(2025, 7, 11, 6, 30, tzinfo=timezone(timedelta(hours=-4)))),
        ("yesterday", None),
        ("Fri, 32 Jul 2025 06:30:00 +0000", None),
        ("Fri, 1 Jul 99999999999 00:00:00 +0000", None),
        ("0", None),
        ("", None),
        (None, None),
    ],
)
def test_dates(value: str | None, expected: datetime | None) -> None:
    """RFC 5322 §3.3 dates and their obsolete forms parse; garbage gives None."""
    assert headers.parse_date(value) == expected


def test_message_ids() -> None:
    """msg-ids are taken in order from References, whatever lies between them."""
    assert headers.message_ids("<a@x> (comment) <b@y>\t<c@z>junk") == ["<a@x>", "<b@y>", "<c@z>"]
    assert headers.message_ids(None) == []
