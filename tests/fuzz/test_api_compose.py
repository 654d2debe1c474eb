"""Composed headers (mail/compose.py) for any subject and display names: one line each, and read back exactly."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from relate.mail import compose
from relate.mail.mime import parse_message

# Display names as a user or a received message may give them (the API caps them at 200 characters).
NAMES = st.lists(st.one_of(st.none(), st.text(max_size=200)), min_size=1, max_size=4)


@given(subject=st.text(max_size=998), names=NAMES)
@example(subject="a\u2028b\x85c", names=["Ann\u2028Lee"])
@example(subject="A A A ¦ AAAAAAA¦¦¦¦¦ A A¦ AA¦ AA¦ ¦ ¦", names=[None])
@example(subject="x\udcff", names=["\x00\udc80"])
def test_headers_are_one_line_each_and_read_back(subject: str, names: list[str | None]) -> None:
    """Whatever the text: no line over 78 characters or of white space only, and the reader gets it back."""
    people = [compose.Person(f"u{i}@example.com", name) for i, name in enumerate(names)]
    draft = compose.Draft(sender=people[0], to=people[1:] or [compose.Person("x@example.org")], subject=subject)
    raw = compose.compose(draft, include_bcc=False)
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        assert len(line) <= 78, line
        assert line.strip(b" \t"), "a line of white space only"
    parsed = parse_message(raw)
    assert (parsed.subject or "").strip() == compose.header_text(subject).strip()
    readers = [a.name or "" for a in parsed.from_ + parsed.to][: len(names)]
    assert [n.strip() for n in readers] == [compose.header_text(n or "").strip() for n in names]
