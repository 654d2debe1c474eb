"""The RFC 5256 §2.1 base subject (relate.mail.basesubject): each extraction step, replies, casemapping."""

from __future__ import annotations

import re

import pytest

from relate.mail.basesubject import base_subject, casemap


def reference(subject: str) -> tuple[str, bool]:
    """The steps of RFC 5256 §2.1 written as directly as regular expressions allow (slow, for comparison)."""
    text = re.sub(r"[ \t\r\n]+", " ", casemap(subject))
    reply = False
    blob = r"\[[^\[\]]*\] ?"
    while True:
        while True:  # (2)
            m = re.search(r"(?: |\(FWD\))$", text)
            if not m:
                break
            reply = reply or m.group() == "(FWD)"
            text = text[: m.start()]
        while True:  # (3), (4), (5)
            found = False
            while True:
                m = re.match(rf"(?:(?:{blob})*(?:RE|FWD|FW) ?(?:{blob})?:| )", text)
                if not m:
                    break
                reply = reply or m.group() != " "
                text, found = text[m.end() :], True
            m = re.match(blob, text)
            if m and text[m.end() :]:
                text, found = text[m.end() :], True
            if not found:
                break
        if len(text) >= 6 and text.startswith("[FWD:") and text.endswith("]"):  # (6)
            text, reply = text[5:-1], True
            continue
        return text, reply


@pytest.mark.parametrize(
    ("subject", "base", "reply"),
    [
        ("Hello", "HELLO", False),
        ("Re: Hello", "HELLO", True),
        ("RE:Hello", "HELLO", True),
        ("re:   hello\t world", "HELLO WORLD", True),
        ("Fw: a", "A", True),
        ("FWD: a", "A", True),
        ("Re [2]: a", "A", True),  # subj-refwd with a blob before the colon
        ("[list] Re: a", "A", True),  # blobs before a leader
        ("[list] a", "A", False),  # step 4: a blob before a non-empty rest goes
        ("[list]", "[LIST]", False),  # ... but not when nothing would be left
        ("[a][b] c", "C", False),
        ("a (fwd)", "A", True),  # step 2
        ("a (fwd)  (FWD) ", "A", True),
        ("[Fwd: a]", "A", True),  # step 6
        ("Re: [Fwd: Re: a (fwd)]", "A", True),
        ("re: [fwd: [fwd: re: [fwd: babylon]]]", "BABYLON", True),
        ("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", "B", True),
        ("Ad: Re: Ad: Re: Ad: x", "AD: RE: AD: RE: AD: X", False),  # "Ad:" is no leader
        ("Re:", "", True),
        ("", "", False),
        (None, "", False),
        ("   ", "", False),
        ("Réunion", "RéUNION", False),  # i;ascii-casemap: only ASCII letters change
        ("Fwd:", "", True),
        ("Reply: a", "REPLY: A", False),  # "RE" must be followed by ":" (or blanks and a blob)
    ],
)
def test_base_subject(subject: str | None, base: str, reply: bool) -> None:
    """Leaders, trailers, blobs and [fwd: ] wrappers go as RFC 5256 §2.1 says; the rest is casemapped."""
    found = base_subject(subject)
    assert (found.text, found.reply) == (base, reply)
    if subject:
        assert reference(subject) == (base, reply)


def test_imaptest_sort_subject_order() -> None:
    """The subjects of imaptest's sort-subject group sort as Dovecot sorts them (i;ascii-casemap)."""
    subjects = [
        "a", "C", "b", "_", "[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", "b (a)", "Re: [FWD: c]", "[xyz]", None,
        " ", "Re: b", "RE: C", "Re: c", "Ad: Re: Ad: Re: Ad: x", "re: [fwd: [fwd: re: [fwd: babylon]]]",
    ]  # fmt: skip
    order = sorted(range(1, 16), key=lambda n: (base_subject(subjects[n - 1]).text, n))
    assert order == [9, 10, 1, 14, 3, 5, 11, 6, 15, 2, 7, 12, 13, 8, 4]


def test_long_runs_of_blobs() -> None:
    """Thousands of blobs without a leader after them lose all but the last, as the steps say."""
    subject = "[x]" * 5000
    assert base_subject(subject).text == "[X]"
    assert base_subject(subject + " end").text == "END"
    assert base_subject("Re: " * 5000 + "a").text == "A"


def test_casemap_is_ascii_only() -> None:
    """i;ascii-casemap changes a-z only (no ß to SS, no é to É)."""
    assert casemap("straße é abc XYZ") == "STRAßE é ABC XYZ"
