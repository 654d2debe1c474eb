"""The client's address behind reverse proxies: ``X-Forwarded-For``, or ``Forwarded`` (RFC 7239).

Policy:

- The peer's own address is the client unless the peer is listed in
  ``api.trusted_proxies`` (addresses or networks; empty by default, so
  nothing a client sends is believed out of the box).
- From a trusted peer, the header named by ``api.proxy_header`` is read,
  and only that one: a proxy that sets one header passes the other through
  from the client untouched, so reading both would let any client choose
  its address.
- Hops are read from the right, where each proxy appends the address it
  saw: trusted addresses are skipped and the first one that is not trusted
  is the client. An entry that is no IP address there ("unknown", an
  obfuscated name, junk) leaves the client at the trusted hop that wrote
  it; if every hop is trusted, the left-most one is the client.
- Reading from the right also means that whatever a client writes into the
  header (on the left) cannot change how the proxies' entries are read:
  a stray quote or comma of its own is never reached before its real
  address is. At most ``MAX_HOPS`` entries are looked at; aiohttp bounds
  each header line (8190 bytes), and the work is linear in what is read.
- IPv4 addresses mapped into IPv6 (``::ffff:192.0.2.1``) are written as
  IPv4, so one client has one spelling in logs and lockout counts.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

HEADERS = ("x-forwarded-for", "forwarded")
# Entries examined from the right: more proxies than this in one chain is a misconfiguration.
MAX_HOPS = 20
# Longest node text worth parsing ("[v6 with zone]:port" fits easily).
_MAX_NODE = 100
# RFC 7239 §4: the for= parameter of one forwarded-element (token or quoted-string value).
_FOR = re.compile(r'(?:^|;)\s*for\s*=\s*("(?:[^"\\]|\\.)*"|[^;"]*)', re.IGNORECASE)
_ESCAPE = re.compile(r"\\(.)")


def parse_networks(items: Iterable[str]) -> list[Network]:
    """``["10.0.0.0/8", "::1"]`` -> networks; raises ValueError naming the first bad item."""
    found = []
    for item in items:
        try:
            found.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {item!r}") from None
    return found


def parse_address(text: str) -> Address | None:
    """An address from ``192.0.2.1``, ``192.0.2.1:80``, ``2001:db8::1``, ``[2001:db8::1]:80``; else None."""
    text = text.strip()
    if not text or len(text) > _MAX_NODE:
        return None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
    elif text.count(":") == 1:
        host = text.partition(":")[0]  # IPv4 with a port
    else:
        host = text
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)


def _elements_from_right(line: str) -> Iterator[str]:
    """The comma-separated elements of one ``Forwarded`` line, last first (commas in quoted strings kept)."""
    end = len(line)
    quoted = False
    i = end - 1
    while i >= 0:
        ch = line[i]
        if ch == '"':
            # A quote after an odd run of backslashes is escaped (it sits inside a quoted string).
            j = i - 1
            while j >= 0 and line[j] == "\\":
                j -= 1
            if (i - 1 - j) % 2 == 0:
                quoted = not quoted
        elif ch == "," and not quoted:
            yield line[i + 1 : end]
            end = i
        i -= 1
    yield line[:end]


def _forwarded_for(element: str) -> str:
    """The ``for=`` value of one element, unquoted ("" when there is none)."""
    m = _FOR.search(element)
    if m is None:
        return ""
    value = m.group(1).strip()
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        value = _ESCAPE.sub(r"\1", value[1:-1])
    return value


def _hops(values: Sequence[str], header: str) -> Iterator[str]:
    """The nodes the header lists, nearest proxy's entry first."""
    for line in reversed(values):
        if header == "forwarded":
            for element in _elements_from_right(line):
                yield _forwarded_for(element)
        else:
            yield from reversed(line.rsplit(",", MAX_HOPS))


def client_address(peer: str | None, values: Sequence[str], *, header: str, trusted: Sequence[Network]) -> str:
    """The client's address as text: the peer's, or what trusted proxies in front of it say (see the policy)."""
    current = parse_address(peer) if peer else None
    if current is None:
        return peer or "local"  # a Unix socket (or whatever the transport calls its peer)
    if not _trusted(current, trusted) or not values:
        return str(current)
    for count, node in enumerate(_hops(values, header)):
        if count >= MAX_HOPS:
            break
        address = parse_address(node)
        if address is None:
            break
        if not _trusted(address, trusted):
            return str(address)
        current = address
    return str(current)
