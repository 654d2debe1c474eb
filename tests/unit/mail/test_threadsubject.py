"""The subject key threads compare: reply and forward prefixes of many languages and list tags taken off."""

from __future__ import annotations

import time

import pytest

from relate.mail.threadsubject import subject_key


@pytest.mark.parametrize(
    ("subject", "key"),
    [
        ("Hello", "HELLO"),
        ("Re: Hello", "HELLO"),
        ("RE: re: Hello", "HELLO"),
        ("AW: Re: [list] WG: Hello", "HELLO"),
        ("Fwd: hello (fwd)", "HELLO"),
        ("[fwd: AW: hello]", "HELLO"),
        ("Re[2]: hello", "HELLO"),
        ("AW(3): hello", "HELLO"),
        ("SV:hello", "HELLO"),
        ("TR: Réunion", "RéUNION"),
        ("RV: hola", "HOLA"),
        ("Antw: hallo", "HALLO"),
        ("回复：你好", "你好"),
        ("Ref: invoice 12", "REF: INVOICE 12"),  # an opener, not a prefix
        ("Reunion: x", "REUNION: X"),
        ("Re:", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_subject_key(subject: str | None, key: str) -> None:
    """Each subject's key, as threading compares it."""
    assert subject_key(subject) == key


def test_long_and_hostile_subjects_are_cheap() -> None:
    """Prefixes, tags or blanks by the hundred thousand cost milliseconds: only the start of a subject is read."""
    start = time.process_time()
    for subject in ("AW: " * 100_000, "[a]" * 100_000 + "x", " " * 100_000, "[" * 100_000, "Re:" + "x" * 100_000):
        assert len(subject_key(subject)) <= 255
    assert time.process_time() - start < 0.5
