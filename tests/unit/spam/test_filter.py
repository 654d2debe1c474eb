"""The spam filter's pure parts: rspamd's answer read, X-Spam-* written and read back, what a list entry matches."""

from __future__ import annotations

import json
import time

import pytest

from relate.spam.filter import read_back, render, replace_subject, strip_fields, subject_field
from relate.spam.rspamd import MAX_SYMBOLS, Unreachable, parse_answer
from relate.store.spam import patterns_for


def answer(**fields: object) -> bytes:
    return json.dumps({"action": "no action", "score": 1.5, "required_score": 15, **fields}).encode()


def test_answer_gives_action_score_and_sorted_symbols() -> None:
    """rspamd's JSON becomes action, score, threshold and symbols by name."""
    result = parse_answer(answer(action="add header", symbols={"B": {"score": 2}, "A": {"score": 0.5}}))
    assert (result.action, result.score, result.required) == ("add header", 1.5, 15.0)
    assert result.symbols == [("A", 0.5), ("B", 2.0)]


@pytest.mark.parametrize(
    "data", [b"not json", b"[]", answer(action="launch missiles"), answer(action=None), b'{"score": 1}']
)
def test_answers_that_are_not_rspamds_count_as_unreachable(data: bytes) -> None:
    """Anything but rspamd's JSON object with a known action is Unreachable (the caller's on_unreachable)."""
    with pytest.raises(Unreachable):
        parse_answer(data)


def test_hostile_scores_and_symbols_are_tamed() -> None:
    """Non-numbers and infinities score 0; at most MAX_SYMBOLS symbols, unprintable names dropped."""
    symbols = {f"S{i:04}": {"score": "x"} for i in range(MAX_SYMBOLS * 2)} | {"bad\nname": {"score": 1}}
    result = parse_answer(answer(score=1e999, symbols=symbols))
    assert result.score == 0.0
    assert len(result.symbols) == MAX_SYMBOLS
    assert all(score == 0.0 for _, score in result.symbols)


def test_fields_round_trip_through_read_back() -> None:
    """What render writes, read_back reads: spam, score, threshold, action, symbols."""
    result = parse_answer(
        answer(action="add header", score=7.25, symbols={f"SYM_{i}": {"score": i} for i in range(30)})
    )
    fields = render(result).decode()
    lines = fields.split("\r\n")
    assert all(len(line) <= 80 for line in lines)
    unfolded = fields.replace("\r\n\t", " ")
    values = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in unfolded.split("\r\n") if line}
    back = read_back(values["X-Spam-Status"], values["X-Spam-Symbols"])
    assert (back["spam"], back["score"], back["required"], back["action"]) == (True, 7.25, 15.0, "add header")
    assert len(back["symbols"]) == 30  # type: ignore[arg-type]
    skipped = read_back(render(None, "unreachable").decode().split(":", 1)[1].strip(), None)
    assert (skipped["spam"], skipped["skipped"], skipped["score"]) == (False, "unreachable", None)


def test_strip_removes_our_fields_with_their_continuations_only() -> None:
    """X-Spam-Status/Score/Symbols go, folded lines included, any case; X-Spam-Flag and the rest stay."""
    section = (
        b"Received: x\r\nx-spam-STATUS : No,\r\n\tscore=-9\r\nX-Spam-Flag: YES\r\nX-Spam-Symbols: A,\r\n B\r\n"
        b"Subject: X-Spam-Score: in a value\r\nX-Spam-Score: -9\r\n\r\n"
    )
    assert strip_fields(section) == b"Received: x\r\nX-Spam-Flag: YES\r\nSubject: X-Spam-Score: in a value\r\n\r\n"
    assert strip_fields(b"Subject: hi\r\n\r\n") is None


def test_strip_is_linear() -> None:
    """A megabyte of continuation lines after one of our fields takes milliseconds, not seconds."""
    section = b"X-Spam-Status: x\r\n" + b" y\r\n" * 250_000 + b"\r\n"
    started = time.perf_counter()
    assert strip_fields(section) == b"\r\n"
    assert time.perf_counter() - started < 1.0


def test_rewrite_subject_answer_gives_the_subject() -> None:
    """rspamd's "subject" comes with a rewrite subject answer; one that is not text, or too long, is dropped."""
    assert parse_answer(answer(action="rewrite subject", subject="***SPAM*** hi")).subject == "***SPAM*** hi"
    assert parse_answer(answer(action="rewrite subject", subject=["x"])).subject is None
    assert parse_answer(answer(action="rewrite subject", subject="x" * 5000)).subject is None


def test_subject_field_is_one_safe_folded_field() -> None:
    """A CR or LF in rspamd's subject cannot start a field; long subjects fold between words; non-ASCII text is
    put in RFC 2047 words (ASCII left as it is)."""
    injected = subject_field("***SPAM*** hi\r\nBcc: everyone@example.com")
    assert injected == b"Subject: ***SPAM*** hi Bcc: everyone@example.com\r\n"
    long = subject_field("***SPAM*** " + " ".join(["word"] * 40))
    lines = long.split(b"\r\n")
    assert all(len(line) <= 78 for line in lines)
    assert all(line.startswith(b" ") for line in lines[1:-1])
    assert long.replace(b"\r\n ", b" ") == b"Subject: ***SPAM*** " + b" ".join([b"word"] * 40) + b"\r\n"
    encoded = subject_field("***SPAM*** Grüße")
    assert encoded.isascii()
    assert b"=?utf-8?" in encoded.lower()


def test_replace_subject_keeps_every_other_field() -> None:
    """The Subject (with its continuation lines, every copy of it) is replaced where it stood; a section
    without one gets it before the blank line."""
    section = b"From: a@b\r\nSubject: old\r\n  folded\r\nTo: c@d\r\nsubject: again\r\n\r\n"
    new = b"Subject: ***SPAM*** old\r\n"
    assert replace_subject(section, new) == b"From: a@b\r\n" + new + b"To: c@d\r\n\r\n"
    assert replace_subject(b"From: a@b\r\n\r\n", new) == b"From: a@b\r\n" + new + b"\r\n"
    assert replace_subject(b"\r\n", new) == new + b"\r\n"


def test_an_entry_matches_the_address_its_domain_and_parents() -> None:
    """alice@mail.example.org is matched by itself, mail.example.org and example.org, never by org."""
    assert patterns_for("Alice@Mail.Example.ORG") == ["alice@mail.example.org", "mail.example.org", "example.org"]
    assert patterns_for("") == []
