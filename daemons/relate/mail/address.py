"""Mail addresses as Relate Mail stores and compares them.

Policy: an address is ``local@domain`` with exactly one ``@``, a dot-atom
local part (RFC 5322 §3.2.3, UTF-8 allowed per RFC 6531) and a domain name
of dot-separated labels; both are compared lower-case (local parts are
case-sensitive in theory, case-insensitive in every deployed system).
Quoted local parts, source routes, address literals and ``%`` hacks are
refused: they are the raw material of relay tricks and no hosted user needs
them.

Internationalized domain names (RFC 5890) are stored and compared as
A-labels: ``München.de`` and ``xn--mnchen-3ya.de`` are one domain, kept as
``xn--mnchen-3ya.de``, whichever form was typed, sent in RCPT TO (an
SMTPUTF8 path may carry the U-label) or given to the API. The mapping is
IDNA2008 with the UTS #46 preprocessing browsers use (case folded, so
``ß`` stays ``ß``: ``straße.de`` is ``xn--strae-oqa.de``, not
``strasse.de``); a name IDNA2008 refuses (``☃.net``) is not a valid domain.
An ASCII name is checked as letters, digits and hyphens only, so the hot
path (nearly every name) never loads the IDNA tables. People read U-labels:
``domain_to_unicode`` and ``address_to_unicode`` turn stored names back for
display. The local part is not touched (RFC 6531 keeps it UTF-8).
"""

from __future__ import annotations

import re

from relate.errors import Invalid

# RFC 5322 atext, plus any non-ASCII character (RFC 6531 UTF8-non-ascii),
# less '%' which only ever serves relay tricks.
_ATEXT = r"[A-Za-z0-9!#$&'*+/=?^_`{|}~\-\u0080-\U0010FFFF]"
_LOCAL = re.compile(rf"^{_ATEXT}+(\.{_ATEXT}+)*$")
_LABEL = re.compile(r"^(?!-)[a-z0-9\-]{1,63}(?<!-)$")
_MAX_TYPED = 1024  # characters of a domain name worth mapping at all (an A-label name has at most 253)


def _to_ascii(domain: str) -> str:
    """The A-label form of a lower-cased name with non-ASCII labels."""
    import idna  # loaded by the few names that need it, not at every relatectl start

    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise Invalid("not a valid domain name") from None


def normalize_domain(name: str) -> str:
    """A hosted-domain name, lower-cased, as A-labels, and checked; raises Invalid."""
    domain = name.strip().lower()
    if not domain or len(domain) > _MAX_TYPED or domain.endswith(".") or "." not in domain:
        raise Invalid(f"not a valid domain name: {name!r}")
    if not domain.isascii():
        try:
            domain = _to_ascii(domain)
        except Invalid:
            raise Invalid(f"not a valid domain name: {name!r}") from None
    if len(domain) > 253 or not all(_LABEL.match(label) for label in domain.split(".")):
        raise Invalid(f"not a valid domain name: {name!r}")
    return domain


def domain_to_unicode(domain: str) -> str:
    """A stored (A-label) domain as people read it: ``xn--mnchen-3ya.de`` -> ``münchen.de``; else unchanged."""
    if "xn--" not in domain:
        return domain
    import idna

    try:
        return str(idna.decode(domain))
    except (idna.IDNAError, UnicodeError):
        return domain


def address_to_unicode(address: str) -> str:
    """A stored address with its domain as U-labels, for display."""
    local, at, domain = address.rpartition("@")
    return f"{local}{at}{domain_to_unicode(domain)}" if at else address


def comparable_domain(text: str) -> str:
    """``text`` as stored domains are compared: normalized (A-labels) when valid, else lower-cased."""
    try:
        return normalize_domain(text)
    except Invalid:
        return text.strip().lower()


def comparable_address(text: str) -> str:
    """``text`` as stored addresses are compared: normalized when it is a valid address, else lower-cased.

    For matching an address taken from a header or a login against stored
    ones, where something that is not an address simply matches nothing.
    """
    try:
        return normalize_address(text)
    except Invalid:
        return text.strip().lower()


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
