"""LIST pattern matching (RFC 9051 §6.3.9) against a brute-force reference, and its cost on hostile patterns."""

from __future__ import annotations

import functools
import itertools
import time

import pytest

from relate.imap.listmatch import Pattern, matches


@functools.lru_cache(maxsize=65536)
def reference(pattern: str, name: str) -> bool:
    """The definition, tried every way: ``*`` takes any run of the name, ``%`` any run without "/".

    Remembering answers keeps it from taking exponential time; it still tries every split.
    """
    if not pattern:
        return not name
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        return any(reference(rest, name[i:]) for i in range(len(name) + 1))
    if head == "%":
        return any(reference(rest, name[i:]) for i in range(len(name) + 1) if "/" not in name[:i])
    return bool(name) and name[0] == head and reference(rest, name[1:])


def test_agrees_with_reference_on_every_short_pattern_and_name() -> None:
    """Every pattern of up to 4 items over a/b///*/% against every name of up to 4 characters over a/b//."""
    names = ["".join(n) for k in range(5) for n in itertools.product("ab/", repeat=k)]
    for k in range(5):
        for items in itertools.product("ab/*%", repeat=k):
            pattern = "".join(items)
            compiled = Pattern("", pattern)
            for name in names:
                assert compiled.matches(name) == reference(pattern, name), (pattern, name)


@pytest.mark.parametrize(
    ("reference_", "pattern", "name", "expected"),
    [
        ("", "*", "Work/2025/Q1", True),
        ("", "%", "Work/2025", False),
        ("", "%", "Work", True),
        ("", "Work/%", "Work/2025", True),
        ("", "Work/%", "Work/2025/Q1", False),
        ("Work/", "%", "Work/2025", True),
        ("Work/2025/", "*", "Work/2025/Q1", True),
        ("", "W%k", "Work", True),
        ("", "inbox", "INBOX", True),
        ("", "InBoX/%", "INBOX/sub", True),
        ("", "inbox*", "INBOX", True),
        ("", "inboxes", "INBOX", False),
        ("", "Inbox.old", "Inbox.old", True),
        ("", "", "", True),
        ("", "a\x00", "a", False),
    ],
)
def test_rfc_examples(reference_: str, pattern: str, name: str, expected: bool) -> None:
    """The RFC's wildcards, the reference as a prefix, and INBOX in any case."""
    assert matches(reference_, pattern, name) is expected


def test_wildcard_runs_collapse() -> None:
    """A run of wildcards matches what its widest member matches: ``%*%`` is ``*``, ``%%`` is ``%``."""
    assert Pattern("", "a%*%b").text == "a*b"
    assert Pattern("", "%%%x").text == "%x"
    assert Pattern("", "*" * 80 + "x").text == "*x"


@pytest.mark.parametrize(
    "pattern",
    ["*%" * 15 + "x", "*" * 80 + "x", "%*" * 1000 + "Q1x", "a%" * 1000 + "!", "%/" * 500],
)
def test_hostile_patterns_are_fast(pattern: str) -> None:
    """Patterns that make a backtracking matcher take minutes take milliseconds against long names."""
    names = ["a" * 1000, "a/" * 500, "Work/2025/Q1" * 80, "%" * 1000]
    compiled = Pattern("", pattern)
    started = time.perf_counter()
    for name in names:
        assert compiled.matches(name) == (pattern == "%/" * 500 and name == "a/" * 500)
    assert time.perf_counter() - started < 0.5
