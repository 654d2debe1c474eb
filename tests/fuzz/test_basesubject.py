"""The base subject (relate.mail.basesubject) and the SORT keys built on it, on any subject a sender writes."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from relate.mail.basesubject import BaseSubject, base_subject
from relate.mail.sortkeys import MAX_ADDRESS_KEY, MAX_SUBJECT_KEY, sort_keys
from tests.unit.mail.test_basesubject import reference

# The characters the extraction steps look at, so that leaders, blobs and wrappers occur often.
_PIECES = st.sampled_from(["re", "Re", "RE", "fw", "fwd", "Fwd", ":", "[", "]", "(fwd)", " ", "\t", "a", "[fwd:", "x"])
_SUBJECTS = st.lists(_PIECES, max_size=40).map("".join)


@given(_SUBJECTS)
@example("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)")
@example("re: [fwd: [fwd: re: [fwd: babylon]]]")
@example("[" * 3 + "]" * 3)
@example("[fwd:]")
def test_matches_the_steps(subject: str) -> None:
    """On subjects made of the pieces the steps look for, the result is what the RFC's steps give."""
    found = base_subject(subject)
    assert (found.text, found.reply) == reference(subject)


@given(st.text(max_size=2000))
@example("[x]" * 700 + " y")
@example("Re: " * 500 + "(fwd)" * 300)
@example("[fwd:" * 400 + "]" * 400)
def test_any_text(subject: str) -> None:
    """Any subject gives a base subject with no leading or trailing space; extracting again changes nothing."""
    found = base_subject(subject)
    assert isinstance(found, BaseSubject)
    assert found.text == found.text.strip(" ")
    assert base_subject(found.text).text == found.text


@given(st.text(max_size=300), st.lists(st.one_of(st.none(), st.text(max_size=40)), min_size=4, max_size=4))
def test_sort_keys_of_any_envelope(subject: str, fields: list[str | None]) -> None:
    """Whatever an ENVELOPE's first address holds, the keys are strings within their bounds."""
    envelope = {"from": [fields], "to": [fields[:2]], "cc": "not a list"}
    keys = sort_keys(subject, envelope)
    assert len(keys.subject) <= MAX_SUBJECT_KEY
    for value in (keys.from_, keys.to, keys.cc, keys.display_from, keys.display_to):
        assert isinstance(value, str)
        assert len(value) <= MAX_ADDRESS_KEY
