"""parse_message past each limit of relate.mail.limits: it degrades as documented, says so, and stays fast and small."""

from __future__ import annotations

import base64
import os
import time
import tracemalloc

import pytest

from relate.mail import limits
from relate.mail.mime import Address, ParsedMessage, parse_message, part_content
from tests.unit.mail.test_mime import nodes


def parse_timed(raw: bytes) -> tuple[ParsedMessage, float]:
    """The parse and the CPU seconds it took (CPU time: other work on a busy machine does not count)."""
    start = time.thread_time()
    parsed = parse_message(raw)
    return parsed, time.thread_time() - start


def test_fields_past_the_limit_are_not_read() -> None:
    """Of a header with more Subject fields than MAX_FIELDS, the first is used and the body is still found."""
    head = b"Subject: first\r\n" + b"Subject: more\r\n" * limits.MAX_FIELDS + b"From: late@example.org\r\n"
    parsed = parse_message(head + b"\r\nbody")
    assert parsed.subject == "first"
    assert parsed.from_ == []  # after the limit: not read
    assert "fields" in parsed.limits
    assert parsed.header_end == len(head) + 2


def test_unread_fields_cost_nothing_and_do_not_count() -> None:
    """Fields parse_message does not use (X-*, Received) never count against MAX_FIELDS."""
    head = b"X-Filler: x\r\n" * (limits.MAX_FIELDS * 5) + b"Subject: found\r\n"
    parsed = parse_message(head + b"\r\nbody")
    assert parsed.subject == "found"
    assert parsed.limits == ()


def test_long_field_is_cut_at_a_fold() -> None:
    """A To: longer than MAX_FIELD_BYTES keeps the addresses of its first MAX_FIELD_BYTES, cut at a fold."""
    count = limits.MAX_FIELD_BYTES // 20
    to = b"To: " + b",\r\n ".join(b"user%05d@example.org" % i for i in range(count))
    parsed = parse_message(to + b"\r\nSubject: after\r\n\r\nbody")
    assert 0 < len(parsed.to) < count
    assert parsed.to[0] == Address(None, "user00000@example.org")
    assert parsed.to[-1].email == f"user{len(parsed.to) - 1:05d}@example.org"  # whole addresses only
    assert parsed.subject == "after"
    assert "field-bytes" in parsed.limits


def test_addresses_past_the_limit_are_skipped() -> None:
    """An address field with more than MAX_ADDRESSES addresses keeps the first MAX_ADDRESSES."""
    to = ", ".join(f"(c) u{i}@x.example" for i in range(limits.MAX_ADDRESSES + 10)).encode()
    parsed = parse_message(b"To: " + to + b"\r\n\r\n")
    assert len(parsed.to) == limits.MAX_ADDRESSES
    assert "addresses" in parsed.limits


def test_header_work_past_the_limit_leaves_later_fields_unparsed() -> None:
    """Past MAX_HEADER_WORK characters of general-path header parsing, later address fields stay unparsed."""
    to = "To: " + ", ".join(f"({'c' * 50}) u{i}@x.example" for i in range(900))  # 63 KiB, not a simple list
    inner = f"{to}\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\nbody".encode()
    count = limits.MAX_HEADER_WORK // len(to) + 3
    raw = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + b"".join(
        b"--b\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n" for _ in range(count)
    )
    parsed, elapsed = parse_timed(raw + b"--b--\r\n")
    envelopes = [part["message"]["envelope"] for part in parsed.bodystructure["parts"]]
    assert len(envelopes) == count
    assert len(envelopes[0]["to"]) == 900
    assert envelopes[-1]["to"] is None
    assert "header-work" in parsed.limits
    assert elapsed < 1.0


def test_mime_nesting_past_the_limit_is_an_opaque_leaf() -> None:
    """Multiparts nested deeper than MAX_MIME_DEPTH end in one text leaf holding the rest, offsets intact."""
    depth = limits.MAX_MIME_DEPTH + 20
    raw = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(depth))
    raw += b"\r\ninnermost"
    parsed = parse_message(raw)
    found = list(nodes(parsed.bodystructure))
    assert len(found) == limits.MAX_MIME_DEPTH + 1
    leaf = found[-1]
    assert (leaf["type"], leaf["subtype"]) == ("text", "plain")
    assert raw[leaf["body_start"] : leaf["end"]].endswith(b"innermost")
    assert "mime-depth" in parsed.limits


def test_parts_past_the_limit_are_skipped() -> None:
    """A multipart with more parts than MAX_PARTS lists the first ones; the rest stays in the raw message."""
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(limits.MAX_PARTS + 50))
    raw = b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + parts + b"--p--\r\n"
    parsed = parse_message(raw)
    assert len(parsed.bodystructure["parts"]) == limits.MAX_PARTS - 1  # the multipart itself counts
    assert "parts" in parsed.limits
    assert part_content(raw, "2") == b"part 1"


def test_overlong_boundary_is_not_used() -> None:
    """A boundary longer than MAX_BOUNDARY leaves the multipart as one text leaf."""
    boundary = b"b" * (limits.MAX_BOUNDARY + 1)
    raw = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n--' + boundary + b"\r\n\r\nx\r\n"
    parsed = parse_message(raw)
    assert "parts" not in parsed.bodystructure
    assert "boundary" in parsed.limits


def test_text_body_is_cut_at_the_limit_and_the_part_stays_whole() -> None:
    """A text part larger than MAX_BODY_BYTES shows its first MAX_BODY_BYTES; part_content gives it all."""
    line = "Grüße aus Köln, " * 4 + "\r\n"
    text = line * (limits.MAX_BODY_BYTES // len(line.encode()) + 1000)
    encoded = base64.encodebytes(text.encode()).replace(b"\n", b"\r\n")
    raw = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + encoded
    parsed = parse_message(raw)
    assert parsed.text_body is not None
    assert text.startswith(parsed.text_body)
    assert limits.MAX_BODY_BYTES - 4 < len(parsed.text_body.encode()) <= limits.MAX_BODY_BYTES
    assert parsed.truncated
    assert len(parsed.text) == limits.MAX_SEARCH_TEXT
    assert part_content(raw, "1") == text.encode()


def test_references_past_the_limit_are_dropped() -> None:
    """References keeps at most MAX_REFERENCES message ids, the first ones."""
    ids = " ".join(f"<{i}@x>" for i in range(limits.MAX_REFERENCES + 5))
    parsed = parse_message(f"References: {ids}\r\n\r\n".encode())
    assert parsed.references == [f"<{i}@x>" for i in range(limits.MAX_REFERENCES)]


def test_overlong_date_is_no_date() -> None:
    """A Date longer than MAX_DATE_CHARS is not parsed."""
    padded = "Fri, 11 Jul 2025 06:30:00 +0000 (" + "x" * limits.MAX_DATE_CHARS + ")"
    assert parse_message(f"Date: {padded}\r\n\r\n".encode()).date is None
    assert parse_message(b"Date: Fri, 11 Jul 2025 06:30:00 +0000 (UTC)\r\n\r\n").date is not None


@pytest.mark.parametrize(
    "head",
    [
        b"Subject: " + b"\r\n ".join(b"=?utf-8?q?caf=C3=A9?=" for _ in range(12_000)),
        b"From: " + b"(" * (256 * 1024),
        b"From: a <b" + b"(" * (256 * 1024),
        b"To: " + (b"(" * 40 + b"x\\)" + b")" * 20 + b" a@b.example, ") * 3500,
        b"Content-Type: text/plain; " + b"(" * (256 * 1024),
        b'Content-Type: multipart/mixed; boundary="' + b"=?" * (128 * 1024),
        b"To: " + b'"' * (256 * 1024),
        b"To: " + b"<" * (256 * 1024),
        b"To: " + b"a:" * (128 * 1024),
        b"Subject: " + b"=?" * (128 * 1024),
        b"Subject: " + b"=?utf-8?q?" * (26 * 1024),
        b"X: y\r\n" * (64 * 1024),
        b"From:" + b" \r\n" * (128 * 1024),
    ],
    ids=[
        "encoded-word-subject",
        "open-comments",
        "angle-then-comments",
        "nested-comment-list",
        "content-type-comments",
        "boundary-of-encoded-word-starts",
        "quotes",
        "angles",
        "group-colons",
        "encoded-word-starts",
        "unterminated-encoded-words",
        "many-fields",
        "folded-blank",
    ],
)
def test_256_kib_hostile_header_parses_in_well_under_a_second(head: bytes) -> None:
    """A 256 KiB hostile header parses in under 1 s of CPU (quadratic parsers took many seconds) and never raises."""
    assert len(head) >= 200 * 1024
    raw = head.rstrip(b"\r\n") + b"\r\n\r\nbody"
    parsed, elapsed = parse_timed(raw)
    assert elapsed < 1.0, elapsed
    assert raw[parsed.header_end :] == b"body"


def _peak(raw: bytes) -> int:
    tracemalloc.start()
    try:
        parse_message(raw)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_large_attachment_is_counted_not_decoded() -> None:
    """Parsing a 24 MB message with a base64 attachment allocates less than a tenth of its size."""
    data = base64.encodebytes(os.urandom(18 * 1024 * 1024)).replace(b"\n", b"\r\n")
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\nsee attached\r\n--b\r\n'
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + data + b"\r\n--b--\r\n"
    )
    assert parse_message(raw).attachments[0].size == 18 * 1024 * 1024
    assert _peak(raw) < len(raw) // 10


def test_large_text_body_costs_at_most_its_display_limit() -> None:
    """Parsing a 24 MB text/plain message allocates about MAX_BODY_BYTES twice (bytes, then text), not its size."""
    raw = b"Content-Type: text/plain\r\n\r\n" + b"All work and no play makes Jack a dull boy.\r\n" * 540_000
    peak = _peak(raw)
    assert peak < 2 * limits.MAX_BODY_BYTES + 1024 * 1024
    assert peak < len(raw) // 2
