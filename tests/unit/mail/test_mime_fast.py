"""parse_message's fast paths (simple Content-Type and address fields) give exactly what the general parser gives.

The general parsers are relate.mail.structured's; test_stdlib_agreement.py compares those with the email package.
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from relate.mail import mime, structured

CONTENT_TYPES = [
    "text/plain",
    "text/plain; charset=us-ascii",
    'Text/HTML;Charset="UTF-8"',
    'multipart/mixed; boundary="----=_Part_1234_5678.1700000000000"',
    'multipart/alternative;\tboundary="b1_abc"; charset=utf-8',
    'multipart/mixed; boundary=" a  b "',
    "application/octet-stream; name=report.pdf",
    'application/pdf; name="Q3 report (final).pdf"',
    "text/plain ; format=flowed; delsp=yes",
    "text/plain; a=1; A=2",
    'text/plain; name="=?utf-8?q?caf=C3=A9?="',
    'text/plain; name="a\\"b"',
    "text/plain; name*=utf-8''caf%C3%A9",
    "text/plain; name*0=a; name*1=b",
    "text/plain;",
    "text/plain; x=y;",
    "text/plain; x = y",
    "text/plain; x=",
    "text",
    "/plain",
    "text/plain charset=us-ascii",
    'text/plain; charset="unterminated',
    "text/plain; (comment) charset=us-ascii",
    "text/plain; charset=us-ascii (comment)",
    "text/pl\u00e4in",
    'text/plain; name="caf\u00e9"',
    "",
]

ADDRESS_LISTS = [
    "alice@example.org",
    "<alice@example.org>",
    "Alice <alice@example.org>",
    "Bench Sender <sender@client.example>",
    "J.  Smith\t<j.smith@example.org>",
    '"Smith, John" <john@example.org>',
    '"  spaced  " <s@example.org>',
    '"A" B <x@example.org>',
    '"A \\"quoted\\" name" <q@example.org>',
    "=?UTF-8?Q?Al=C3=AFce?= <alice@example.org>",
    "a@example.org, b@example.org,\tC <c@example.org>",
    "a@example.org,, b@example.org",
    "a@example.org,",
    " a@example.org ",
    "a.b.@example.org",
    ".a@example.org",
    "a..b@example.org",
    "a@example..org",
    "a@[127.0.0.1]",
    "a @ example.org",
    "Alice<alice@example.org>",
    "Alice <alice@example.org> (work)",
    "(comment) alice@example.org",
    "undisclosed-recipients:;",
    "Team: a@example.org, b@example.org;",
    "Alice <alice@example.org",
    "Alice alice@example.org",
    "<>",
    "\u00fcser@b\u00fccher.example",
    "J\u00f6rg <jorg@example.net>",
    '"" <empty@example.org>',
    "a@b",
    "a+tag@sub.example.org",
    "o'brien@example.ie",
    "@example.org",
    "alice@",
    "",
]


def slow_content_type(value: str) -> tuple[str, str, dict[str, str]] | None:
    parsed = structured.parse_parameters(value, content_type=True)
    if not parsed.value:
        return None
    maintype, _, subtype = parsed.value.partition("/")
    return maintype, subtype, parsed.params


def _random_text(rng: random.Random, alphabet: str, low: int, high: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


_PIECES = "aZ09.-_+=?*'\"\\;:,<>()@[] \t/\u00e9\u65e5"


def random_content_type(rng: random.Random) -> str:
    """A Content-Type that is simple most of the time, with random breakage mixed in."""
    text = rng.choice(["text", "multipart", "Application", "x-" + _random_text(rng, "ab-", 1, 4)])
    text += "/" + rng.choice(["plain", "HTML", "mixed", _random_text(rng, "az.+-*'%", 1, 6)])
    for _ in range(rng.randint(0, 3)):
        text += rng.choice([";", "; ", " ;\t", ";  "])
        text += rng.choice(["charset", "boundary", "name", "Format", "a", "a", "n'x", "n%", "n*"]) + "="
        if rng.random() < 0.5:
            text += _random_text(rng, "azAZ09-._'%*!#$&^`{|}~", 1, 8)
        else:
            text += '"' + _random_text(rng, "az AZ09-._=?/,;:()", 0, 12) + '"'
    if rng.random() < 0.3:
        at = rng.randint(0, len(text))
        text = text[:at] + rng.choice(_PIECES) + text[at:]
    return text


def random_address_list(rng: random.Random) -> str:
    """An address list that is simple most of the time, with random breakage mixed in."""
    items = []
    for _ in range(rng.randint(1, 3)):
        addr = (
            _random_text(rng, "az09._+'\u00e9", 1, 6)
            + "@"
            + rng.choice(["example.org", "b\u00fccher.de", "x", "ex..am"])
        )
        shape = rng.randint(0, 3)
        if shape == 0:
            items.append(addr)
        elif shape == 1:
            items.append(f"<{addr}>")
        elif shape == 2:
            items.append(
                _random_text(rng, "az AZ.\t\u00fc\u5c71", 1, 10).strip() + rng.choice([" ", "", "\t "]) + f"<{addr}>"
            )
        else:
            items.append('"' + _random_text(rng, "az AZ,.:;()@<>\u00e9", 0, 10) + '" <' + addr + ">")
    text = rng.choice([",", ", ", " ,\t"]).join(items)
    if rng.random() < 0.3:
        at = rng.randint(0, len(text))
        text = text[:at] + rng.choice(_PIECES) + text[at:]
    return text


@pytest.mark.parametrize("value", CONTENT_TYPES)
def test_simple_content_type_agrees_with_general_parser(value: str) -> None:
    """Where the Content-Type fast path answers, its type, subtype and parameters are the email package's."""
    fast = mime._simple_content_type(value)
    if fast is not None:
        assert fast == slow_content_type(value)


@pytest.mark.parametrize("value", ADDRESS_LISTS)
def test_simple_address_list_agrees_with_general_parser(value: str) -> None:
    """Where the address fast path answers, its groups, names and addresses are the general parser's."""
    fast = mime._simple_address_list(value)
    if fast is not None:
        assert fast == general_address_list(value)


def test_fast_paths_take_the_common_forms() -> None:
    """Plain types, quoted boundaries, bare, angled and named addresses take the fast paths."""
    for value in CONTENT_TYPES[:9]:
        assert mime._simple_content_type(value) is not None, value
    for value in [*ADDRESS_LISTS[:7], *ADDRESS_LISTS[9:11], "J\u00f6rg <j\u00f6rg@b\u00fccher.example>"]:
        assert mime._simple_address_list(value) is not None, value
    for value in ("text/plain; name*=utf-8''x", 'text/plain; name="=?utf-8?q?x?="', "text/plain; a=1; a=2"):
        assert mime._simple_content_type(value) is None, value
    for value in ("Team: a@example.org;", "a@example.org (c)", '"a\\"b" <a@example.org>', "a, <b@example.net"):
        assert mime._simple_address_list(value) is None, value


def test_fast_paths_agree_on_generated_fields() -> None:
    """On thousands of generated fields, simple and broken, every fast answer equals the general one."""
    rng = random.Random(20261122)
    fast_types = fast_lists = 0
    for _ in range(3000):
        value = random_content_type(rng)
        fast = mime._simple_content_type(value)
        if fast is not None:
            fast_types += 1
            assert fast == slow_content_type(value), value
        value = random_address_list(rng)
        listed = mime._simple_address_list(value)
        if listed is not None:
            fast_lists += 1
            assert listed == general_address_list(value), value
    assert fast_types > 500  # both paths were really compared
    assert fast_lists > 500


def general_address_list(value: str) -> list[Any]:
    """The general parser's groups for a value it reads without a problem (the fast path's answer must be it)."""
    parsed = structured.parse_address_list(value)
    assert not parsed.problems, (value, parsed.problems)
    return parsed.groups


def test_field_addresses_identical_with_and_without_fast_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sender check's reading of From (field_addresses) is the same with the address fast path off."""
    corpus = _corpus()
    fast = [mime.field_addresses(raw, "From") for raw in corpus]
    assert sum(found is not None for found in fast) > len(corpus) // 2
    _without_fast_paths(monkeypatch)
    assert [mime.field_addresses(raw, "From") for raw in corpus] == fast


def _without_fast_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mime, "_simple_content_type", lambda value: None)
    monkeypatch.setattr(mime, "_simple_address_list", lambda value: None)


def _corpus() -> list[bytes]:
    fields = [
        (b"From", ADDRESS_LISTS),
        (b"To", ADDRESS_LISTS[::-1]),
        (b"Cc", ADDRESS_LISTS[3:] + ADDRESS_LISTS[:3]),
        (b"Content-Type", CONTENT_TYPES),
    ]
    out = []
    for i in range(max(len(ADDRESS_LISTS), len(CONTENT_TYPES))):
        head = b"".join(name + b": " + values[i % len(values)].encode() + b"\r\n" for name, values in fields)
        out.append(head + b"Subject: corpus " + str(i).encode() + b"\r\n\r\nbody\r\n")
    out.append(
        b"From: A <a@example.org>\r\nTo: b@example.org\r\nContent-Type: multipart/mixed; boundary=xyz\r\n\r\n"
        b"--xyz\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhi\r\n"
        b'--xyz\r\nContent-Type: message/rfc822\r\n\r\nFrom: "Inner, Name" <i@example.org>\r\n'
        b'Content-Type: text/html; charset="iso-8859-1"\r\n\r\n<p>x</p>\r\n--xyz--\r\n'
    )
    return out


def test_parse_message_identical_with_and_without_fast_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every field of parse_message, envelope and body structure included, is the same with the fast paths off."""
    corpus = _corpus()
    fast: list[dict[str, Any]] = [mime.parse_message(raw).to_json() for raw in corpus]
    _without_fast_paths(monkeypatch)
    slow: list[dict[str, Any]] = [mime.parse_message(raw).to_json() for raw in corpus]
    assert fast == slow


# The address classes as RFC 5322 and RFC 6532 state them; mime.py writes each as the complement of the ASCII
# characters it leaves out (far cheaper to compile): the two must be the same set.
READABLE = {
    "_ATEXT": r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]",
    "_LABEL": r"[A-Za-z0-9\u0080-\U0010ffff-]++",
    "_PHRASE_ATOM": r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\u0080-\U0010ffff-]++",
}
SAMPLES = [*range(0x100), 0x100, 0x7FF, 0x800, 0xD7FF, 0xD800, 0xDFFF, 0xE000, 0xFF20, 0xFFFF, 0x10000, 0x10FFFF]


@pytest.mark.parametrize("name", sorted(READABLE))
def test_address_classes_are_the_sets_the_rfcs_give(name: str) -> None:
    ours = re.compile(getattr(mime, name))
    readable = re.compile(READABLE[name])
    for code in SAMPLES:
        assert bool(ours.fullmatch(chr(code))) == bool(readable.fullmatch(chr(code))), hex(code)


def test_a_quoted_display_name_takes_what_a_quoted_string_may_hold() -> None:
    quoted = re.compile(r'"[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]*+"')
    for code in SAMPLES:
        value = f'"{chr(code)}" <a@example.com>'
        assert bool(mime._SIMPLE_ADDRESS_LIST.fullmatch(value)) == bool(quoted.fullmatch(f'"{chr(code)}"')), hex(code)
