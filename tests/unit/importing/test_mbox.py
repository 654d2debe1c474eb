"""Reading mbox files: separators, mboxrd/mboxo unquoting, bookkeeping fields as flags, dates, limits."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime

from relate.importing import mbox


def _read(data: bytes, **kw: object) -> list[mbox.MboxMessage | mbox.Oversized]:
    return list(mbox.read(io.BytesIO(data), **kw))  # type: ignore[arg-type]


def test_messages_split_at_from_lines_after_an_empty_line() -> None:
    """A 'From ' line starts a message only at the start of the file or after an empty line."""
    data = (
        b"From a@x Mon Jan  5 10:00:00 2026\nSubject: 1\n\nbody\nFrom inside a paragraph\n\n"
        b"From b@x Tue Jan  6 11:00:00 2026\nSubject: 2\n\nx\n"
    )
    found = _read(data)
    assert [m.raw for m in found if isinstance(m, mbox.MboxMessage)] == [
        b"Subject: 1\n\nbody\nFrom inside a paragraph\n",
        b"Subject: 2\n\nx\n",
    ]


def test_mboxrd_takes_one_quote_off_and_mboxo_only_from_single_quotes() -> None:
    """mboxrd: '>From ' and '>>From ' each lose one '>'; mboxo: only '>From ' does."""
    data = b"From a@x Mon Jan  5 10:00:00 2026\n\n>From one\n>>From two\n> From not quoted\n"
    (rd,) = _read(data)
    (o,) = _read(data, rd=False)
    assert isinstance(rd, mbox.MboxMessage)
    assert isinstance(o, mbox.MboxMessage)
    assert rd.raw == b"\nFrom one\n>From two\n> From not quoted\n"
    assert o.raw == b"\nFrom one\n>>From two\n> From not quoted\n"


def test_status_fields_become_flags_and_leave_the_message() -> None:
    """Status R, X-Status AFTD and X-Keywords are flags; they and X-UID/X-IMAP are taken out, folded lines too."""
    data = (
        b"From a@x Mon Jan  5 10:00:00 2026\nX-IMAPbase: 1 2\nSubject: s\nStatus: RO\nX-Status: AFTD\n"
        b"X-Keywords: $Label1,\n  Work bad(word\nX-UID: 4\nTo: b@x\n\nStatus: in the body stays\n"
    )
    (m,) = _read(data)
    assert isinstance(m, mbox.MboxMessage)
    assert m.raw == b"Subject: s\nTo: b@x\n\nStatus: in the body stays\n"
    assert set(m.flags) == {"\\Seen", "\\Answered", "\\Flagged", "\\Draft", "\\Deleted", "$Label1", "Work"}


def test_a_message_without_bookkeeping_is_kept_byte_for_byte() -> None:
    """Nothing to take out: the very bytes, CRLF and all."""
    data = b"From a@x Mon Jan  5 10:00:00 2026\r\nSubject: s\r\n\r\nbody\r\n"
    (m,) = _read(data)
    assert isinstance(m, mbox.MboxMessage)
    assert m.raw == b"Subject: s\r\n\r\nbody\r\n"


def test_internal_date_from_the_separator_else_the_date_field() -> None:
    """The separator's asctime date (UTC, a zone before or after the year tolerated), else Date:."""
    assert mbox.separator_date(b"From a@x Mon Jan  5 10:00:09 2026\n") == datetime(2026, 1, 5, 10, 0, 9, tzinfo=UTC)
    assert mbox.separator_date(b"From a@x Mon Jan 5 10:00 PST 2026\n") == datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    assert mbox.separator_date(b"From a@x\n") is None
    (m,) = _read(b"From a@x\nDate: Tue, 6 Jan 2026 12:00:00 +0100\n\nx\n")
    assert isinstance(m, mbox.MboxMessage)
    assert m.internal_date == datetime(2026, 1, 6, 11, 0, tzinfo=UTC)


def test_an_oversized_message_is_skipped_not_held() -> None:
    """A message past max_size comes back as Oversized with its size; the next one is read as usual."""
    big = b"From a@x Mon Jan  5 10:00:00 2026\n\n" + b"x" * 70 + b"\n" + b"y" * 200_000 + b"\n\n"
    found = _read(big + b"From b@x Mon Jan  5 10:00:00 2026\n\nsmall\n", max_size=1000)
    assert isinstance(found[0], mbox.Oversized)
    assert found[0].size > 200_000
    assert isinstance(found[1], mbox.MboxMessage)
    assert found[1].raw == b"\nsmall\n"


def test_reading_is_linear_in_hostile_input() -> None:
    """Long lines, many From-like lines and a huge header stay linear (well under a second for ~8 MB)."""
    hostile = b"From a@x Mon Jan  5 10:00:00 2026\n" + b"X-A: " + b"b" * 3_000_000 + b"\n" + b">From \n" * 300_000
    hostile += b"\n".join(b"X-%d: v" % i for i in range(100_000)) + b"\n\n"
    started = time.process_time()
    (m,) = _read(hostile)
    assert isinstance(m, mbox.MboxMessage)
    assert time.process_time() - started < 3
