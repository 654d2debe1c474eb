"""Fuzzing the header parsers of relate.mail: encoded words, address lists, MIME parameters, sections, dates, HTML text.

None of them has an error of its own: whatever the input, they return, and
what they return keeps the properties below.
"""

from __future__ import annotations

import base64
import binascii

from hypothesis import example, given
from hypothesis import strategies as st

from relate.mail import encoded_words, headers, htmltext, limits, structured
from relate.mail.mime import field_addresses

# Issue 12's reproducers (the field values) and pieces that once broke a parser.
SUBJECT_16K_WORDS = "\r\n ".join("=?utf-8?q?caf=C3=A9?=" for _ in range(16_000))
FROM_500_PARENS = "a <b" + "(" * 500
STRUCTURED_PIECES = [
    "(",
    ")",
    "\\",
    '"',
    "<",
    ">",
    "@",
    ",",
    ";",
    ":",
    ".",
    "[",
    "]",
    " ",
    "\t",
    "=?",
    "?=",
    "=?utf-8?q?",
    "=?utf-8?b?",
    "a",
    "é",
    "bob",
    "example.org",
    "=",
    "*",
    "'",
    "%E9",
    "name*0*",
    "name*1",
    "filename",
    "boundary",
]
STRUCTURED = st.lists(st.sampled_from(STRUCTURED_PIECES), max_size=60).map("".join) | st.text(max_size=300)


@st.composite
def encoded_word(draw: st.DrawFn) -> tuple[str, str]:
    """(an encoded word, the text it encodes)."""
    text = draw(st.text(max_size=30))
    if draw(st.booleans()):
        encoded = base64.b64encode(text.encode()).decode()
        return f"=?utf-8?{draw(st.sampled_from('bB'))}?{encoded}?=", text
    encoded = binascii.b2a_qp(text.encode(), quotetabs=True, istext=False, header=True).decode()
    encoded = encoded.replace("=\n", "").replace("?", "=3F")
    return f"=?UTF-8?{draw(st.sampled_from('qQ'))}?{encoded}?=", text


@given(st.text(max_size=500) | STRUCTURED)
@example(SUBJECT_16K_WORDS)
@example("=?" * 5000)
@example("=?utf-8?q?" * 3000)
@example("=?rot13?q?x?= =?idna?q?x?= =?punycode?q?x?= =?unicode_escape?q?\\u0041?=")
def test_decoder_on_any_text(text: str) -> None:
    """Any text decodes to text; text without "=?" is unchanged."""
    notes: set[str] = set()
    decoded = encoded_words.decode(text, notes)
    assert isinstance(decoded, str)
    assert notes <= {"encoded-words"}
    if "=?" not in text:
        assert decoded == text


@given(st.lists(encoded_word(), min_size=1, max_size=10), st.sampled_from([" ", "\t", "\r\n ", "  "]))
def test_encoded_words_round_trip(words: list[tuple[str, str]], space: str) -> None:
    """Encoded words separated by white space decode to their texts joined without it (RFC 2047 §6.2)."""
    assert encoded_words.decode(space.join(word for word, _ in words)) == "".join(text for _, text in words)


@given(STRUCTURED)
@example(FROM_500_PARENS)
@example("(" * 5000)
@example('"' + "\\" * 1001)
@example("<" * 5000 + ">" * 4999)
@example(", ".join(["a@b.example"] * (limits.MAX_ADDRESSES + 5)))
@example("<@route:user@domain>, T <@a,@b:t@x>")
@example("<@:>")
def test_address_list_on_any_text(value: str) -> None:
    """Any text gives an address list within the limits, problems from the documented set."""
    result = structured.parse_address_list(value)
    members = [member for _, found in result.groups for member in found]
    assert len(members) <= limits.MAX_ADDRESSES
    assert all(name or addr for name, addr in members)
    assert result.problems <= {"unbalanced", "nesting", "route", "junk", "too-many"}
    assert set(result.routes) <= {addr for _, addr in members}  # a route belongs to an address read
    assert all(route.startswith("@") for route in result.routes.values())
    assert not result.routes or "route" in result.problems


# Local parts of atext (an encoded word inside an address is refused by field_addresses: no "=?").
LOCAL = st.from_regex(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\.[a-z0-9_-]{1,8}){0,2}", fullmatch=True).filter(
    lambda local: "=?" not in local
)
DOMAIN = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9-]{1,8}){1,2}", fullmatch=True)
# Display names without control characters, and without "=?" (an encoded word is decoded even inside quotes).
NAME = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20).filter(
    lambda n: "=?" not in n
)


@given(st.lists(st.tuples(NAME, LOCAL, DOMAIN), min_size=1, max_size=5))
def test_formatted_addresses_round_trip(people: list[tuple[str, str, str]]) -> None:
    """Addresses written as RFC 5322 mailboxes (names quoted or encoded) read back as written."""
    people = [(" ".join(name.split()), local, domain) for name, local, domain in people]
    written = []
    for name, local, domain in people:
        if not name:
            written.append(f"{local}@{domain}")
        elif name.isascii():
            quoted = name.replace("\\", "\\\\").replace('"', '\\"')
            written.append(f'"{quoted}" <{local}@{domain}>')
        else:
            written.append(f"=?utf-8?b?{base64.b64encode(name.encode()).decode()}?= <{local}@{domain}>")
    value = ", ".join(written)
    groups = structured.parse_address_list(value).groups
    read = [(encoded_words.decode(name), addr) for _, members in groups for name, addr in members]
    assert read == [(name, f"{local}@{domain}") for name, local, domain in people]
    found = field_addresses(f"From: {value}\r\n\r\n".encode(), "From")
    assert found is not None
    addresses = list(dict.fromkeys(f"{local}@{domain}" for _, local, domain in people))
    assert found[: len(addresses)] == addresses
    assert all(any(extra in name for name, _, _ in people) for extra in found[len(addresses) :])


@given(STRUCTURED, st.booleans())
@example("text/plain; " + "(" * 3000, True)
@example("text/plain; name*99999999999999999999=x; name*0*=''%ZZ%; name*0=y", True)
def test_parameters_on_any_text(value: str, content_type: bool) -> None:
    """Any Content-Type or Content-Disposition value parses; names are lower-case, the type has one "/"."""
    parsed = structured.parse_parameters(value, content_type=content_type)
    assert all(name == name.lower() for name in parsed.params)
    assert parsed.value == parsed.value.lower()
    if content_type and parsed.value:
        assert parsed.value.count("/") == 1


@given(st.binary(max_size=3000))
@example(b"From: " + FROM_500_PARENS.encode() + b"\r\n\r\n")
@example(b"From: a@b\r\n\x00\r\n\r\n")
@example(b"From:" + b" \r\n" * 1000)
def test_sections_and_field_addresses_on_any_bytes(raw: bytes) -> None:
    """Any bytes have a header section inside them; field_addresses gives None or addresses found in the head."""
    section = headers.scan(raw, 0, len(raw))
    assert 0 <= section.first <= section.stop <= section.body <= len(raw)
    for name, value in headers.fields(raw, section, headers.FieldNames(["from", "subject"])):
        assert name in ("from", "subject")
        assert len(value) <= limits.MAX_FIELD_BYTES
    found = field_addresses(raw, "From")
    assert found is None or all(isinstance(address, str) and address for address in found)
    headers.decoded_fields(raw, len(raw))


@given(st.text(max_size=300))
@example("Fri, 1 Jul 99999999999 00:00:00 +0000")
@example("0")
@example("Mon, 7 Jul 2025 09:15:00 +9999")
def test_dates_on_any_text(value: str) -> None:
    """Any text gives an aware datetime or None."""
    parsed = headers.parse_date(value)
    assert parsed is None or parsed.tzinfo is not None


@given(
    st.text(max_size=2000)
    | st.lists(
        st.sampled_from(["<", ">", "!--", "-->", "script", "/", "&", "#x", ";", "a", " ", "p", "[", "]"]), max_size=200
    ).map("".join)
)
@example("<!--" * 1000)
@example("<![foo[ x ]]>")
def test_html_text_on_any_text(document: str) -> None:
    """Any HTML gives text of stripped, non-empty lines."""
    text = htmltext.visible_text(document)
    assert all(line and line == line.strip() for line in text.split("\n")) or text == ""
