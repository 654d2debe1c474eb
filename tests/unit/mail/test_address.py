"""Address normalization: what counts as an address we host, and what is refused."""

from __future__ import annotations

from email._header_value_parser import get_angle_addr

import pytest

from relate.errors import Invalid
from relate.mail.address import address_to_unicode, domain_to_unicode, normalize_address, normalize_domain, plain_path


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Bob@Example.COM", "bob@example.com"),
        ("  alice.smith+tag@mail.example.org ", "alice.smith+tag@mail.example.org"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("jörg@bücher.example", "jörg@xn--bcher-kva.example"),
        ("Jörg@BÜCHER.example", "jörg@xn--bcher-kva.example"),
        ("jörg@XN--BCHER-KVA.example", "jörg@xn--bcher-kva.example"),
        ("info@straße.de", "info@xn--strae-oqa.de"),
    ],
)
def test_valid_addresses_are_lower_cased(given: str, expected: str) -> None:
    """Valid addresses are accepted and compared lower-case, their domain as IDNA A-labels (the local part as is)."""
    assert normalize_address(given) == expected


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("xn--mnchen-3ya.de", "münchen.de"),
        ("mail.xn--bcher-kva.example", "mail.bücher.example"),
        ("example.com", "example.com"),
        ("xn--zz.example", "xn--zz.example"),  # not a valid A-label: shown as stored
    ],
)
def test_stored_domains_are_shown_as_u_labels(stored: str, shown: str) -> None:
    """domain_to_unicode turns A-labels back for people; address_to_unicode leaves the local part alone."""
    assert domain_to_unicode(stored) == shown
    assert address_to_unicode(f"Jörg@{stored}") == f"Jörg@{shown}"


@pytest.mark.parametrize(
    "given",
    [
        "",
        "bob",
        "@example.com",
        "bob@",
        "bob@@example.com",
        "bob@a@example.com",
        '"bob@evil"@example.com',
        "bob%evil.com@example.com",
        "@relay.example:bob@evil.com",
        "bob@[127.0.0.1]",
        "bob@example.com.",
        "bob.@example.com",
        ".bob@example.com",
        "bo..b@example.com",
        "bob@-example.com",
        "bob@localhost",
        "bob smith@example.com",
        "x" * 65 + "@example.com",
        "bob@☃.net",  # IDNA2008 refuses the snowman
        "bob@münchen..de",
        "bob@" + "ü" * 70 + ".de",  # its A-label is longer than 63
    ],
)
def test_relay_tricks_and_malformed_addresses_are_refused(given: str) -> None:
    """Quoted locals, % hacks, source routes, literals, trailing dots and junk are refused."""
    with pytest.raises(Invalid):
        normalize_address(given)


def test_domain_names() -> None:
    """Domain names are lower-cased; malformed ones are refused."""
    assert normalize_domain("Example.ORG") == "example.org"
    for bad in ["", "example", "exa mple.org", "example.org.", "-a.example", "a" * 64 + ".org"]:
        with pytest.raises(Invalid):
            normalize_domain(bad)


@pytest.mark.parametrize(
    "arg",
    [
        "<bob@example.com>",
        "<Bob.Smith+tag@Mail.Example.COM> SIZE=10240 BODY=8BITMIME",
        "<a-@-b>\tSMTPUTF8",
        "<a=b_c@x-y.example>   NOTIFY=NEVER ",
        "<bob@example.com>x",
        "<1@2>",
        "<>",
        "<> SIZE=100",
        "<>x",
    ],
)
def test_plain_path_gives_what_the_full_parser_gives(arg: str) -> None:
    """A plain <local@domain> MAIL/RCPT argument takes the fast path with the full parser's exact result."""
    address, rest = get_angle_addr(arg)
    assert plain_path(arg) == (address.addr_spec, str(rest))


@pytest.mark.parametrize(
    "arg",
    [
        '<"bob smith"@example.com>',
        "<bob@example.com> (comment) SIZE=1",
        "<bob@[192.0.2.1]>",
        "<@relay.example:bob@example.com>",
        "<jörg@bücher.example>",
        "<.bob@example.com>",
        "<bob..smith@example.com>",
        "<bob@example.com.>",
        "< bob@example.com>",
        "bob@example.com",
        "<bob@example.com",
        "<bob(x)@example.com>",
    ],
)
def test_plain_path_leaves_other_forms_to_the_full_parser(arg: str) -> None:
    """Quoted, commented, literal, routed, non-ASCII, obsolete or malformed paths are not taken by the fast path."""
    assert plain_path(arg) is None
