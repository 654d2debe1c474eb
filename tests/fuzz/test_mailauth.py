"""The mail-authentication parsers (Authentication-Results, SPF records, DKIM-Signature and ARC set discovery,
DMARC records, From domains): whatever a sender writes, an answer or the parser's own error comes out, quickly."""

from __future__ import annotations

import contextlib
import re
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from relate.mail import mime
from relate.mailauth import arc, authres, dmarc, verdict
from relate.mailauth import dkim as dkimv
from relate.mailauth.spf import PermError, parse_record
from relate.mailauth.verdict import from_domains

# Header sections built of the pieces the shortcuts below count: From and ARC and Authentication-Results field
# names in any case, at line starts and inside lines, CR, LF, NUL, folds.
_SECTION_PIECES = st.sampled_from(
    [
        *("From:", "from :", "FROM\t:", "From ", "fRoM", "From: a@b.example", "x: from:", "\r\n", "\n", "\r"),
        *("\r\n ", "\x00", "ARC-Seal: i=1", "arc-", "Authentication-Results: mx.example; spf=pass", "\r\n\r\n"),
        *("Subject: s", " ", ":", "a@b.example", "é"),
    ]
)
_UNSAFE = re.compile(rb"\r(?!\n)|\x00")  # what mime._unsafe answered before it counted instead
_AR_PIECES = st.sampled_from(
    ["mail.example.com", ";", " ", "\t", "(", ")", '"', "\\", "=", "spf", "pass", "dkim", "reason", "x.y", "@", "é"]
)
_SPF_PIECES = st.sampled_from(
    [
        *("v=spf1", " ", "a", "mx", "ip4:", "ip6:", "1.2.3.4", "::1", "/", "//", "24", "%{", "}", "i", "r", "-", "+"),
        *("~", "include:", "redirect=", "exists:", "ptr", "all", "%%", "%_", ".", "example.com", "exp=", "="),
    ]
)


@given(st.text(max_size=3000))
@example("(" * 5000)
@example('"' * 5000)
@example("mail.example.com; " + "spf=pass " * 2000)
@example('x; dkim=pass reason="' + "\\" * 3000)
def test_authentication_results_parse(value: str) -> None:
    """Any field value parses into an authserv-id and entries; nothing raises."""
    ident, entries = authres.parse(value)
    assert isinstance(ident, str)
    assert all(e.method and isinstance(e.properties, dict) for e in entries)


@given(st.lists(_AR_PIECES, max_size=400))
def test_authentication_results_shaped(pieces: list[str]) -> None:
    """Values made of the grammar's pieces parse; stripping ours from a header of them keeps the rest whole."""
    value = "".join(pieces)
    authres.parse(value)
    section = b"Subject: x\r\nAuthentication-Results: " + value.encode() + b"\r\nTo: y\r\n\r\n"
    stripped = authres.strip_ours(section, "mail.example.com")
    if stripped is not None:
        assert stripped.startswith(b"Subject: x\r\n")
        assert stripped.endswith(b"To: y\r\n\r\n")


@given(st.binary(max_size=3000))
@example(b"DKIM-Signature: " + b"a=" * 3000 + b"\r\n\r\n")
@example(b"DKIM-Signature: v=1; d=example.com; s=s; b=; bh=\r\n" * 200 + b"\r\n")
def test_dkim_signature_discovery(head: bytes) -> None:
    """Any header gives a list of signatures, each with a domain and selector or a problem."""
    for sig in dkimv.find_signatures(head):
        assert sig.problem or (sig.domain and sig.selector)


@given(st.binary(max_size=3000))
@example(b"ARC-Seal: i=1; d=a.example; s=s; cv=none; b=\r\n" * 11 + b"\r\n")
@example(b"ARC-Authentication-Results: i=999999; x; dmarc=pass\r\nARC-Seal: i=" + b"9" * 3000 + b"\r\n\r\n")
@example(b"ARC-Message-Signature: " + b"d=" * 3000 + b"\r\n\r\n")
def test_arc_set_discovery(head: bytes) -> None:
    """Any header gives no chain or one within the bounds (at most 2 keys a set), or one marked unverifiable;
    a chain not marked is verified to pass or fail without raising."""
    chain = arc.find_chain(head)
    if chain is None or chain.problem:
        return
    assert chain.instances <= arc.MAX_SETS
    assert len(chain.keys) <= 2 * arc.MAX_SETS
    assert arc.verify(head, chain, {}).result in ("pass", "fail")


@given(st.lists(_SPF_PIECES, max_size=200))
def test_spf_record_parse(pieces: list[str]) -> None:
    """Any record parses into terms or raises PermError."""
    with contextlib.suppress(PermError):
        parse_record("v=spf1 " + "".join(pieces))


@given(st.text(max_size=2000))
def test_dmarc_record_parse(text: str) -> None:
    """Any TXT value is a DMARC record with known values, or not one."""
    record = dmarc.parse_record("v=DMARC1;" + text, "example.com")
    assert record is not None
    assert record.p in dmarc.POLICIES
    assert record.sp in dmarc.POLICIES
    assert 0 <= record.pct <= 100


@given(st.binary(max_size=3000))
@example(b"From: a <b" + b"(" * 500 + b"\r\n\r\n")
@example(b"From: " + b"@x.example " * 2000 + b"\r\n\r\n")
def test_from_domains(section: bytes) -> None:
    """Any header gives a list of distinct From domains, none empty."""
    domains, _ = from_domains(section)
    assert len(domains) == len(set(domains))
    assert all(domains)


@given(st.lists(_SECTION_PIECES, max_size=60).map(lambda p: "".join(p).encode()), st.integers(0, 400))
@example(b"From: a\r\nb\r", 11)
@example(b"From: a\r\nb\r\n", 11)
def test_counted_shortcuts_are_the_expressions(section: bytes, stop: int) -> None:
    """The checks' C-counted tests (a bare CR or NUL before ``stop``; one From field; whether a section may
    hold an ARC or Authentication-Results field) answer what the regular expressions they spare did."""
    stop = min(stop, len(section))
    assert mime._unsafe(section, stop) == (_UNSAFE.search(section, 0, stop) is not None)
    if mime.field_addresses(section, "From"):
        assert verdict._one_from_field(section) == (len(verdict._FROM_FIELD.findall(section)) == 1)
    lowered = section.lower()
    if b"arc-" not in lowered:
        assert arc._ANY.search(section) is None
    if b"authentication-results" not in lowered:
        assert authres._ANY.search(section) is None


@given(st.binary(max_size=300).map(lambda b: b.decode("ascii", "replace")), st.text(max_size=100))
@example("\x1c\x1d\x1e\x1f\x85\xa0", "x\u2028y")
def test_blank_free_b_value_is_the_expressions(value: str, text: str) -> None:
    """header.b's blanks go by str.split as by the expression ``\\s+`` it replaced, whatever the text."""
    for t in (value, text):
        assert "".join(t.split()) == re.sub(r"\s+", "", t)


@given(st.binary(max_size=3000))
@example(b"From: a\r\n" + b" folded\r\n" * 5000 + b"\r\nbody\r\n")
@example(b"X:" * 10000 + b"\r\n\r\n")
@example(b"From: a\r\n" + b"body\n" * 5000)  # a bare LF anywhere: dkimpy's own parse
def test_dkim_message_parse_is_dkimpys(message: bytes) -> None:
    """The message parse given to dkimpy (its fast path) gives what dkimpy's own gives, or the same error."""

    def outcome(parse: Any) -> object:
        try:
            return parse(message)
        except Exception as exc:  # noqa: BLE001 - compared, not handled
            return (type(exc), str(exc))

    assert outcome(dkimv.rfc822_parse) == outcome(dkimv._DKIMPY_RFC822_PARSE)
