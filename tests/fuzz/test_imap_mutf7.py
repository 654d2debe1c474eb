"""Modified UTF-7 mailbox names (relate.mail.mutf7, relate.imap.mutf7): round trips, and only InvalidName
(ParseError on the IMAP wire) on malformed input."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from relate.imap.errors import ParseError
from relate.imap.mutf7 import decode_mailbox
from relate.mail.mutf7 import InvalidName, decode, encode

# Text as a mailbox name can hold it: any code point but the surrogates (which UTF-8 cannot carry).
_NAMES = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60)
_WIRE = st.text(alphabet=st.sampled_from("&-AOk,+/=abz09 \x00\x7f\u00e9"), max_size=40)


@given(_NAMES)
@example("Café/日本語")
@example("&&-&")
@example("\x00")
@example("\U0001f600")
def test_encode_then_decode_gives_the_name_back(name: str) -> None:
    """Every name encodes to printable ASCII that decodes to the same name."""
    wire = encode(name)
    assert wire.isascii()
    assert wire.isprintable()
    assert decode(wire) == name


@given(st.one_of(_WIRE, st.text(max_size=40)))
@example("&AAA-")
@example("&AGE-")
@example("&2AA-")
@example("&AOkA6Q-")
@example("&Jjo")
@example("&AOk-&AOk-")
@example("&-&AOk-&-")
def test_decode_raises_only_invalid_name_and_is_canonical(text: str) -> None:
    """Decoding any text gives a name or InvalidName; a name re-encodes to exactly the text sent (one spelling)."""
    try:
        name = decode(text)
    except InvalidName:
        return
    assert encode(name) == text
    if "&" not in text:
        assert name == text


@given(st.binary(max_size=60), st.booleans())
@example(b"\xff\xfe", True)
@example(b"Caf\xc3\xa9", False)
def test_decode_mailbox_raises_only_parse_error(raw: bytes, utf8: bool) -> None:
    """A mailbox name as bytes from the wire gives text or ParseError, in either mode."""
    try:
        name = decode_mailbox(raw, utf8=utf8)
    except ParseError:
        return
    assert isinstance(name, str)
