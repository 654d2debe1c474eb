"""DNS for the authentication checks: the daemon's asyncio resolver, answers as text, errors in two kinds.

A lookup answers with the records' values, or None for a *void* lookup
(NXDOMAIN, or the name exists without records of that type: RFC 7208 §4.6.4
counts both), or raises :class:`TempError` for anything that may go away
(timeout, SERVFAIL, no server reachable). A name that cannot be a DNS name
(an empty label, over 63 or 253 octets) is void: a macro may expand to one.
The resolver's cache keeps answers for their TTL and is shared by every
check in the process.
"""

from __future__ import annotations

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver


class TempError(Exception):
    """DNS did not answer this time (timeout, SERVFAIL, no server)."""


class Dns:
    """The lookups SPF, DKIM and DMARC make, through one shared resolver."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver

    async def _answer(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        try:
            qname = dns.name.from_text(name.rstrip(".") + ".")
        except (dns.exception.SyntaxError, dns.name.EmptyLabel, dns.name.LabelTooLong, dns.name.NameTooLong):
            return None
        try:
            return await self.resolver.resolve(qname, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout) as exc:
            raise TempError(f"{rdtype} {name}: {type(exc).__name__}") from None
        except dns.exception.DNSException as exc:  # anything else dnspython raises (a malformed answer)
            raise TempError(f"{rdtype} {name}: {type(exc).__name__}") from None

    async def txt(self, name: str) -> list[str] | None:
        """The TXT records of ``name``, each one's strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
        answer = await self._answer(name, "TXT")
        if answer is None:
            return None
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]

    async def addresses(self, name: str, rdtype: str) -> list[str] | None:
        """A or AAAA records of ``name``, as text."""
        answer = await self._answer(name, rdtype)
        return None if answer is None else [r.to_text() for r in answer]

    async def mx(self, name: str) -> list[str] | None:
        """The exchange names of ``name``'s MX records (a null MX's "." included)."""
        answer = await self._answer(name, "MX")
        return None if answer is None else [r.exchange.to_text(omit_final_dot=True) for r in answer]

    async def ptr(self, name: str) -> list[str] | None:
        answer = await self._answer(name, "PTR")
        return None if answer is None else [r.target.to_text(omit_final_dot=True) for r in answer]
