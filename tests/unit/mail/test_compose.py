"""Composed headers: one line whatever the text holds, folded so that every reader gets the text back."""

from __future__ import annotations

import email.header
import itertools
from email import policy
from email.parser import BytesParser

import pytest

from relate.mail import compose
from relate.mail.mime import parse_message


def composed(subject: str = "Hi", name: str | None = None, filename: str | None = None) -> bytes:
    draft = compose.Draft(
        sender=compose.Person("alice@example.com", name),
        to=[compose.Person("bob@example.org", "Bob")],
        subject=subject,
        text_body="Hello\n",
        attachments=[compose.Attachment(filename, "text/plain", b"x")] if filename else [],
    )
    return compose.compose(draft, include_bcc=False)


def head(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


@pytest.mark.parametrize("odd", ["\u2028", "\u2029", "\x85", "\n", "\r", "\x00", "\x0b", "\x1c", "\x7f"])
def test_line_breaks_and_controls_in_header_text_become_spaces(odd: str) -> None:
    """U+2028, NEL, CR, LF, NUL and other controls in a subject, name or filename are spaces: one line each."""
    raw = composed(f"a{odd}b", name=f"Ann{odd}Lee", filename=f"x{odd}y.txt")
    parsed = parse_message(raw)
    assert parsed.subject == "a b"
    assert parsed.from_[0].name == "Ann Lee"
    assert b'filename="x y.txt"' in raw
    assert all(b"\x00" not in line and b"\r" not in line and b"\n" not in line for line in head(raw))


def test_a_lone_surrogate_becomes_a_replacement_character() -> None:
    """Text that is no Unicode (a lone surrogate, from a badly decoded original) is U+FFFD, not an exception."""
    assert parse_message(composed("a\udcffb")).subject == "a\ufffdb"


@pytest.mark.parametrize(
    "subject",
    [
        # Folded by the email package, the space before the last encoded word became folding white
        # space, which readers drop (RFC 2047 §6.2): it read back as "...AA¦¦ ¦".
        "A A A ¦ AAAAAAA¦¦¦¦¦ A A¦ AA¦ AA¦ ¦ ¦",
        "Einladung zur Besprechung über die Änderungen im Projektplan für nächste Woche und die übernächste",
        "Привет, это очень длинная тема письма, которая точно не поместится в одну строку заголовка",
        "  two  spaces  and \t a tab, ünd ümlauts  ",
        "=?utf-8?b?Zm9v?= is not an encoded word here",
    ],
)
def test_long_and_non_ascii_subjects_read_back_exactly(subject: str) -> None:
    """Subjects come back exactly (spaces inside included) from this project's reader and the standard library's."""
    raw = composed(subject)
    assert (parse_message(raw).subject or "").strip() == subject.strip()
    assert str(BytesParser(policy=policy.default).parsebytes(raw)["subject"]).strip() == subject.strip()
    assert all(len(line) <= 78 for line in head(raw))


def test_plain_ascii_is_folded_before_a_space_and_not_encoded() -> None:
    """A long ASCII subject stays readable: folded before spaces, no encoded words."""
    subject = " ".join(["word"] * 40)
    lines = head(composed(subject))
    start = next(i for i, line in enumerate(lines) if line.startswith(b"Subject: "))
    folded = [lines[start], *itertools.takewhile(lambda line: line.startswith(b" "), lines[start + 1 :])]
    assert b"=?" not in b"".join(folded)
    assert b"".join(folded) == b"Subject: " + subject.encode()
    assert all(len(line) <= 78 for line in folded)


@pytest.mark.parametrize(
    ("name", "written"),
    [
        ("Ann Lee", b"From: Ann Lee <alice@example.com>"),
        ("Lee, Ann", b'From: "Lee, Ann" <alice@example.com>'),
        ('Ann "The Boss" Lee', b'From: "Ann \\"The Boss\\" Lee" <alice@example.com>'),
        # Some readers decode encoded words even in quoted strings: such a name is encoded itself.
        ("=?utf-8?q?x?=", b"From: =?utf-8?b?PT91dGYtOD9xP3g/PQ==?= <alice@example.com>"),
        ("Zoë", b"From: =?utf-8?b?Wm/Dqw==?= <alice@example.com>"),
        (None, b"From: alice@example.com"),
    ],
)
def test_display_names_are_atoms_quoted_or_encoded(name: str | None, written: bytes) -> None:
    """Plain names stay plain, names with specials are quoted, non-ASCII ones are RFC 2047 words."""
    raw = composed(name=name)
    assert written in head(raw)
    assert parse_message(raw).from_[0].name == (name or None)


def test_a_long_non_ascii_name_among_many_recipients_reads_back() -> None:
    """Address fields fold between addresses and encoded words; each name decodes to itself."""
    people = [compose.Person(f"u{i}@example.org", f"Jürgen Müller-Lüdenscheidt Nummer {i}") for i in range(5)]
    draft = compose.Draft(sender=people[0], to=people[1:], subject="x", text_body="y")
    raw = compose.compose(draft, include_bcc=False)
    parsed = parse_message(raw)
    assert [a.name for a in parsed.to] == [p.name for p in people[1:]]
    assert all(len(line) <= 78 for line in head(raw))
    to = raw.split(b"\r\nTo: ", 1)[1].split(b"\r\nSubject:", 1)[0].replace(b"\r\n", b"")
    assert str(email.header.make_header(email.header.decode_header(to.decode()))).startswith("Jürgen Müller")
