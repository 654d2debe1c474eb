"""The ids THREAD links messages by (relate.mail.threadids): RFC 5256 §3's rules for Message-ID and references."""

from __future__ import annotations

import pytest

from relate.mail.limits import MAX_THREAD_REFERENCES
from relate.mail.threadids import msg_ids, thread_ids


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<a@b>", ["<a@b>"]),
        ("  <a@b>  (comment) <c@d>", ["<a@b>", "<c@d>"]),
        ("<a @ b>", ["<a@b>"]),  # white space inside is dropped (folding put it there)
        ("<A@B>", ["<A@B>"]),  # case is kept: ids compare case-sensitively
        ("<nodomain>", []),
        ("<@b> <a@>", []),
        ("<a <b@c>", ["<b@c>"]),
        ("junk", []),
        ("", []),
        (None, []),
    ],
)
def test_valid_ids(value: str | None, expected: list[str]) -> None:
    """Only <...> with an @ and something on each side is a valid msg-id."""
    assert msg_ids(value) == expected


def test_references_first_then_in_reply_to() -> None:
    """References give the chain; In-Reply-To only when References has no valid id, and then its first."""
    assert thread_ids("<m@x>", "<p@x>", ["<r1@x>", "<r2@x>"]) == ["<m@x>", "<r1@x>", "<r2@x>"]
    assert thread_ids("<m@x>", "<p@x> <q@x>", []) == ["<m@x>", "<p@x>"]
    assert thread_ids("<m@x>", "<p@x>", ["<bad>"]) == ["<m@x>", "<p@x>"]
    assert thread_ids(None, None, []) == [""]
    assert thread_ids("not an id", "also not", []) == [""]


def test_nearest_references_are_kept() -> None:
    """Of a long References chain, the last MAX_THREAD_REFERENCES (the nearest ancestors) are kept."""
    chain = [f"<r{i}@x>" for i in range(100)]
    assert thread_ids("<m@x>", None, chain) == ["<m@x>", *chain[-MAX_THREAD_REFERENCES:]]
