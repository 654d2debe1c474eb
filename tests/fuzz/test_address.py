"""Fuzzing relate.mail.address: normalize_address and plain_path raise nothing but Invalid, whatever they are given."""

from __future__ import annotations

from email._header_value_parser import get_angle_addr

from hypothesis import example, given
from hypothesis import strategies as st

from relate.errors import Invalid
from relate.mail.address import normalize_address, normalize_domain, plain_path

PIECES = [
    "a",
    "B",
    "0",
    ".",
    "@",
    "-",
    "_",
    "+",
    "%",
    '"',
    "\\",
    "<",
    ">",
    " ",
    "\t",
    "[",
    "]",
    "(",
    ")",
    ":",
    ",",
    "é",
    "\x00",
    "\uff20",
]
ADDRESSES = st.text(max_size=300) | st.lists(st.sampled_from(PIECES), max_size=80).map("".join)


@given(ADDRESSES)
@example("x" * 65 + "@example.com")
@example("a@" + "a" * 64 + ".org")
@example("a@" + ".".join(["a"] * 200))
@example("<demo@")
@example("a\x00b@x.example")
def test_normalize_address(address: str) -> None:
    """An address normalizes to a lower-case local@domain, idempotently, or Invalid comes out."""
    try:
        normalized = normalize_address(address)
    except Invalid:
        return
    local, at, domain = normalized.partition("@")
    assert at
    assert local
    assert domain
    assert "@" not in domain
    assert normalized == normalized.lower()
    assert normalize_address(normalized) == normalized


@given(ADDRESSES)
@example("example." + "a" * 300)
def test_normalize_domain(name: str) -> None:
    """A domain normalizes to a lower-case name of at most 253 characters, idempotently, or Invalid comes out."""
    try:
        domain = normalize_domain(name)
    except Invalid:
        return
    assert domain == domain.lower()
    assert len(domain) <= 253
    assert normalize_domain(domain) == domain


@given(
    st.text(max_size=300) | st.lists(st.sampled_from([*PIECES, "SIZE=10", "BODY=8BITMIME"]), max_size=60).map("".join)
)
@example("<>")
@example("<bob@example.com> (comment) SIZE=1")
@example("<demo@example.test")
def test_plain_path(arg: str) -> None:
    """plain_path answers only where the full RFC 5322 parser gives the same address and rest; else None."""
    found = plain_path(arg)
    if found is None or found[0] == "<>":
        return
    address, rest = get_angle_addr(arg)
    assert found == (address.addr_spec, str(rest))
