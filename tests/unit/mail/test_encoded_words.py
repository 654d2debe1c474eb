"""RFC 2047 encoded words: the RFC's own examples, the leniencies real mail needs, and the per-field bound."""

from __future__ import annotations

import pytest

from relate.mail import limits
from relate.mail.encoded_words import decode


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        # RFC 2047 §8, the table of white space between encoded words
        ("(=?ISO-8859-1?Q?a?=)", "(a)"),
        ("(=?ISO-8859-1?Q?a?= b)", "(a b)"),
        ("(=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=)", "(ab)"),
        ("(=?ISO-8859-1?Q?a?=  =?ISO-8859-1?Q?b?=)", "(ab)"),
        ("(=?ISO-8859-1?Q?a?=\r\n    =?ISO-8859-1?Q?b?=)", "(ab)"),
        ("(=?ISO-8859-1?Q?a_b?=)", "(a b)"),
        ("(=?ISO-8859-1?Q?a?= =?ISO-8859-2?Q?_b?=)", "(a b)"),
        # RFC 2047 §8, the message example
        ("=?US-ASCII?Q?Keith_Moore?=", "Keith Moore"),
        ("=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?=", "Keld Jørn Simonsen"),
        ("=?ISO-8859-1?Q?Andr=E9?= Pirard", "André Pirard"),
        (
            "=?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?= =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=",
            "If you can read this you understand the example.",
        ),
    ],
)
def test_rfc_2047_examples(encoded: str, decoded: str) -> None:
    """The examples of RFC 2047 §8 decode as the RFC says."""
    assert decode(encoded) == decoded


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("=?utf-8?b?Y2Fmw6k?=", "café"),  # missing padding
        ("=?utf-8?B?Y2Fm w6k=?=", "café"),  # white space inside (an unfolded word)
        ("=?utf-8?q?caf=C3=A9 au lait?=", "café au lait"),  # white space in a Q word (invalid, common)
        ("=?UTF-8*en?Q?hello?=", "hello"),  # RFC 2231 §5 language
        ("Re:=?utf-8?q?caf=C3=A9?=", "Re:café"),  # not preceded by white space
        ('"=?utf-8?q?M=C3=BCller?=" <m@x>', '"Müller" <m@x>'),  # inside a quoted string
        ("=?utf-8?b?4oKs?==?utf-8?b?4oKs?=", "€€"),  # adjacent without white space
        ("=?utf-8?q?=E2=82?= =?utf-8?q?=AC?=", "€"),  # a character split across two words
        ("=?x-no-such-charset?q?caf=C3=A9?=", "café"),  # unknown charset: UTF-8
        ("=?x-no-such-charset?q?caf=E9?=", "caf\ufffd"),  # ... and U+FFFD for what is not UTF-8
        ("=?us-ascii?q?caf=E9?=", "caf\ufffd"),  # invalid in its charset
        ("=?rot13?q?nop?=", "nop"),  # not a text encoding: refused, read as UTF-8
        ("=?utf-8?q?a=ZZb=?=", "a=ZZb="),  # malformed escapes stay
        ("=?utf-8?x?abc?=", "=?utf-8?x?abc?="),  # unknown encoding: not an encoded word
        ("=?utf-8?b?Y?=", "=?utf-8?b?Y?="),  # base64 that cannot be whole: stays as text
        ("=?utf-8?q?unterminated", "=?utf-8?q?unterminated"),
        ("plain text, no words", "plain text, no words"),
        ("a =?utf-8?q?b?= c", "a b c"),
        (" =?utf-8?q?a?= ", " a "),
    ],
)
def test_leniencies_of_real_readers(encoded: str, decoded: str) -> None:
    """Mail that bends RFC 2047 the usual ways decodes as readers show it; what is no word stays as text."""
    assert decode(encoded) == decoded


def test_words_past_the_limit_stay_as_text() -> None:
    """Only MAX_ENCODED_WORDS words are decoded; the rest stays as written and the limit is noted."""
    text = " ".join(["=?utf-8?q?x?="] * (limits.MAX_ENCODED_WORDS + 3))
    notes: set[str] = set()
    decoded = decode(text, notes)
    assert decoded == "x" * limits.MAX_ENCODED_WORDS + " " + " ".join(["=?utf-8?q?x?="] * 3)
    assert notes == {"encoded-words"}
