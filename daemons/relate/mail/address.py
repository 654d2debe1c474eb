"""Mail addresses as Relate Mail stores and compares them.

Policy: an address is ``local@domain`` with exactly one ``@``, a dot-atom
local part (RFC 5322 §3.2.3, UTF-8 allowed per RFC 6531) and a domain name
of dot-separated labels; both are compared lower-case (local parts are
case-sensitive in theory, case-insensitive in every deployed system).
Quoted local parts, source routes, address literals and ``%`` hacks are
refused: they are the raw material of relay tricks and no hosted user needs
them.
"""

from __future__ import annotations

import re

from relate.errors import Invalid

# RFC 5322 atext, plus any non-ASCII character (RFC 6531 UTF8-non-ascii),
# less '%' which only ever serves relay tricks.
_ATEXT = r"[A-Za-z0-9!#$&'*+/=?^_`{|}~\-\u0080-\U0010FFFF]"
_LOCAL = re.compile(rf"^{_ATEXT}+(\.{_ATEXT}+)*$")
_LABEL = re.compile(r"^(?!-)[a-z0-9\-\u0080-\U0010FFFF]{1,63}(?<!-)$")


def normalize_domain(name: str) -> str:
    """A hosted-domain name, lower-cased and checked; raises Invalid."""
    domain = name.strip().lower()
    if not domain or len(domain) > 253 or domain.endswith(".") or "." not in domain:
        raise Invalid(f"not a valid domain name: {name!r}")
    if not all(_LABEL.match(label) for label in domain.split(".")):
        raise Invalid(f"not a valid domain name: {name!r}")
    return domain


def split_address(address: str) -> tuple[str, str]:
    """(local, domain) of a normalized address; raises Invalid."""
    text = address.strip()
    if text.count("@") != 1:
        raise Invalid(f"not a valid address: {address!r}")
    local, _, domain = text.partition("@")
    if not local or len(local) > 64 or not _LOCAL.match(local):
        raise Invalid(f"not a valid address: {address!r}")
    try:
        domain = normalize_domain(domain)
    except Invalid:
        raise Invalid(f"not a valid address: {address!r}") from None
    return local.lower(), domain


def normalize_address(address: str) -> str:
    """``Local@Example.COM`` -> ``local@example.com``; raises Invalid."""
    local, domain = split_address(address)
    return f"{local}@{domain}"


# A path as nearly every client sends it: <dot-atom@dot-atom> in plain ASCII, parameters after.
_PLAIN_PATH = re.compile(
    r"<([A-Za-z0-9_+=\-]+(?:\.[A-Za-z0-9_+=\-]+)*@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*)>[ \t]*(.*)", re.DOTALL
)


def plain_path(arg: str) -> tuple[str, str] | None:
    """(address, parameters) of a plain ``<local@domain> PARAMS`` or ``<>`` argument; None for anything else.

    A fast path for MAIL FROM and RCPT TO (RFC 5321 §4.1.2): the result is
    exactly what the full RFC 5322 parser (``email._header_value_parser``)
    gives for these inputs; every other form (quoted local parts, comments,
    address literals, source routes, non-ASCII) is left to that parser.
    """
    if arg.startswith("<>"):
        return "<>", arg[2:]
    match = _PLAIN_PATH.fullmatch(arg)
    if match is None or match.group(2).startswith("("):
        return None
    return match.group(1), match.group(2)
