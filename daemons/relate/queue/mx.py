"""Where mail for a domain goes: MX lookup with the fallbacks RFC 5321 §5.1 and RFC 7505 ask for.

Policy: the MX records, lowest preference first (ties in random order);
no MX record at all means the domain itself is the only host (its A/AAAA
records); a null MX (one record, preference 0, exchange ".") means the
domain accepts no mail, a permanent failure. A domain that does not exist
(NXDOMAIN) fails permanently; any other DNS trouble (timeout, SERVFAIL) is
temporary.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from relate.runtime.resolver import make_resolver

__all__ = ["DnsPermanent", "DnsTemporary", "Host", "hosts_for", "make_resolver"]


class DnsPermanent(Exception):
    """The domain cannot receive mail (null MX, no such domain)."""

    def __init__(self, enhanced: str, text: str) -> None:
        super().__init__(text)
        self.enhanced = enhanced


class DnsTemporary(Exception):
    """DNS did not answer usefully this time."""


@dataclass(frozen=True)
class Host:
    name: str
    addresses: list[str]


async def _addresses(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(name, rdtype)
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            continue
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise DnsTemporary(f"looking up {rdtype} of {name}: {type(exc).__name__}") from None
        found.extend(r.to_text() for r in answer)
    return found


async def hosts_for(resolver: dns.asyncresolver.Resolver, domain: str) -> list[Host]:
    """The hosts to try for ``domain``, in order; raises DnsPermanent or DnsTemporary."""
    try:
        answer = await resolver.resolve(domain, "MX")
        records = [(r.preference, r.exchange.to_text(omit_final_dot=True)) for r in answer]
    except dns.resolver.NXDOMAIN:
        raise DnsPermanent("5.1.2", f"domain {domain} does not exist") from None
    except dns.resolver.NoAnswer:
        records = []
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise DnsTemporary(f"looking up MX of {domain}: {type(exc).__name__}") from None
    if len(records) == 1 and records[0][1] in ("", "."):
        # RFC 7505 §3: a null MX says the domain accepts no mail.
        raise DnsPermanent("5.1.10", f"domain {domain} accepts no mail (null MX)")
    if not records:
        # RFC 5321 §5.1: no MX, so the domain itself is the implicit MX.
        addresses = await _addresses(resolver, domain)
        if not addresses:
            raise DnsPermanent("5.1.2", f"domain {domain} has no MX and no address")
        return [Host(domain, addresses)]
    random.shuffle(records)
    records.sort(key=lambda rec: rec[0])
    hosts: list[Host] = []
    for _, name in records:
        if name in ("", "."):
            continue
        try:
            addresses = await _addresses(resolver, name)
        except DnsTemporary:
            addresses = []
        if addresses:
            hosts.append(Host(name, addresses))
    if not hosts:
        raise DnsTemporary(f"no address for any MX host of {domain}")
    return hosts
