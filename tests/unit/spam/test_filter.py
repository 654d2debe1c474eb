"""The spam filter's pure parts: rspamd's answer read, X-Spam-* written and read back, what a list entry matches."""

from __future__ import annotations

import json
import time

import pytest

from relate.spam.filter import read_back, render, strip_fields
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


def test_an_entry_matches_the_address_its_domain_and_parents() -> None:
    """alice@mail.example.org is matched by itself, mail.example.org and example.org, never by org."""
    assert patterns_for("Alice@Mail.Example.ORG") == ["alice@mail.example.org", "mail.example.org", "example.org"]
    assert patterns_for("") == []
