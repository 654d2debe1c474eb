"""DNS for the authentication checks: the daemon's asyncio resolver, answers as text, errors in two kinds.

A lookup answers with the records' values, or None for a *void* lookup
(NXDOMAIN, or the name exists without records of that type: RFC 7208 §4.6.4
counts both), or raises :class:`TempError` for anything that may go away
(timeout, SERVFAIL, no server reachable). A name that cannot be a DNS name
(an empty label, over 63 or 253 octets) is void: a macro may expand to one.

Answers, void ones included, are kept as text in this process's cache
(:class:`_Answers`, shared by every check) for their TTL, a void one for the
negative TTL its SOA gives (RFC 2308 §5), none longer than ``MAX_TTL``:
a warm lookup is one dictionary read, not a resolver call that builds a DNS
name and, for a void answer, raises and catches an exception (about a tenth
of the SMTP daemon's CPU per message before). TempError is never kept. The
resolver given is copied without its cache; the original keeps its own.

Results computed from answers (an SPF evaluation: :meth:`Dns.derived`) are kept too, with the answers they
were computed from, and given again only while every one of those answers is still in the cache unchanged:
the same inputs and the same answers make the same result, so nothing a check decides changes, and a result
lives no longer than the shortest TTL it depends on. A result that saw an answer not kept (a name that is no
DNS name, an answer without TTL) or a temporary failure is not kept.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, TypeVar

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

MAX_TTL = 3600  # seconds an answer is kept at most, whatever its TTL
MAX_ENTRIES = 20_000  # answers kept at most (least recently used dropped first)
MAX_DERIVED = 10_000  # results kept at most (all dropped at once past it)

Values = list[str] | None
T = TypeVar("T")


class TempError(Exception):
    """DNS did not answer this time (timeout, SERVFAIL, no server)."""


class _Answers:
    """The text answers by (name, type), each until it expires; least recently used dropped past the bound."""

    def __init__(self, entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries = entries
        self._clock = clock
        self._kept: OrderedDict[tuple[str, str], tuple[float, Values]] = OrderedDict()

    def get(self, key: tuple[str, str]) -> tuple[bool, Values]:
        found = self._kept.get(key)
        if found is None:
            return False, None
        if found[0] <= self._clock():
            del self._kept[key]
            return False, None
        self._kept.move_to_end(key)
        return True, found[1]

    def clear(self) -> None:
        self._kept.clear()

    def put(self, key: tuple[str, str], values: Values, ttl: float) -> None:
        if ttl <= 0:
            return
        self._kept[key] = (self._clock() + min(ttl, MAX_TTL), values)
        self._kept.move_to_end(key)
        while len(self._kept) > self._entries:
            self._kept.popitem(last=False)


class _Trace:
    """The answers one computation used, by (name, type); ``kept`` is False once one of them was not kept."""

    __slots__ = ("answers", "kept")

    def __init__(self) -> None:
        self.answers: list[tuple[tuple[str, str], Values]] = []
        self.kept = True


# The trace of the computation running in this task (Dns.derived), if any.
_TRACE: contextvars.ContextVar[_Trace | None] = contextvars.ContextVar("relate_dns_trace", default=None)


def _negative_ttl(responses: list[dns.message.Message]) -> int:
    """RFC 2308 §5: how long a void answer may be kept: the SOA in its authority section, the lesser of the
    record's TTL and its MINIMUM field; 0 (not kept) without one."""
    for response in responses:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                return int(min(rrset.ttl, rrset[0].minimum))
    return 0


class Dns:
    """The lookups SPF, DKIM and DMARC make, through one shared resolver and one cache of their answers."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        # A copy without dnspython's cache: this class keeps the answers (one cache, one notion of a void answer's
        # life); the resolver given, which other lookups of the daemon may share (MX), keeps its own.
        self.resolver = copy.copy(resolver)
        self.resolver.cache = None
        self._answers = _Answers()
        self._derived: dict[Hashable, tuple[object, list[tuple[tuple[str, str], Values]]]] = {}

    def kept(self, name: str, rdtype: str = "TXT") -> bool:
        """Whether an answer for ``name`` is in the cache (a lookup of it would not wait)."""
        return self._answers.get((name.rstrip(".").lower(), rdtype))[0]

    def forget(self) -> None:
        """Drop every answer kept (what a domain publishes is asked again), and every result made of them."""
        self._answers.clear()
        self._derived.clear()

    async def derived(
        self, key: Hashable, compute: Callable[[], Awaitable[T]], keep: Callable[[T], bool] = lambda _: True
    ) -> T:
        """``compute()``'s result, or the one it gave before for ``key`` while every answer it used is still
        kept unchanged (see the module docstring). ``key`` must name every input of the computation but the
        answers; ``keep`` says whether a result may be kept (not one that reports DNS trouble)."""
        found = self._derived.get(key)
        if found is not None:
            for name, values in found[1]:
                hit, now = self._answers.get(name)
                if not hit or (now is not values and now != values):
                    del self._derived[key]
                    break
            else:
                return found[0]  # type: ignore[return-value]  # what compute() returned for this key
        trace = _Trace()
        token = _TRACE.set(trace)
        try:
            result = await compute()
        finally:
            _TRACE.reset(token)
        if trace.kept and keep(result):
            if len(self._derived) >= MAX_DERIVED:
                self._derived.clear()
            self._derived[key] = (result, trace.answers)
        return result

    def _put(self, key: tuple[str, str], values: Values, ttl: float) -> None:
        self._answers.put(key, values, ttl)
        trace = _TRACE.get()
        if trace is not None:
            if ttl > 0:
                trace.answers.append((key, values))
            else:
                trace.kept = False

    async def _lookup(self, name: str, rdtype: str, text: Callable[[dns.resolver.Answer], list[str]]) -> Values:
        key = (name.rstrip(".").lower(), rdtype)
        hit, values = self._answers.get(key)
        if hit:
            trace = _TRACE.get()
            if trace is not None:
                trace.answers.append((key, values))
            return values
        try:
            qname = dns.name.from_text(name.rstrip(".") + ".")
        except (dns.exception.SyntaxError, dns.name.EmptyLabel, dns.name.LabelTooLong, dns.name.NameTooLong):
            self._put(key, None, 0)  # (not kept: no answer to depend on)
            return None
        try:
            answer = await self.resolver.resolve(qname, rdtype, search=False)
        except dns.resolver.NXDOMAIN as exc:
            values, ttl = None, _negative_ttl(list(exc.kwargs.get("responses", {}).values()))
        except dns.resolver.NoAnswer as exc:
            values, ttl = None, _negative_ttl([exc.kwargs["response"]] if "response" in exc.kwargs else [])
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout) as exc:
            self._put(key, None, 0)  # (nothing kept; a result that saw it is not kept either)
            raise TempError(f"{rdtype} {name}: {type(exc).__name__}") from None
        except dns.exception.DNSException as exc:  # anything else dnspython raises (a malformed answer)
            self._put(key, None, 0)
            raise TempError(f"{rdtype} {name}: {type(exc).__name__}") from None
        else:
            values, ttl = text(answer), (answer.rrset.ttl if answer.rrset is not None else 0)
        self._put(key, values, ttl)
        return values

    async def txt(self, name: str) -> Values:
        """The TXT records of ``name``, each one's strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
        return await self._lookup(
            name, "TXT", lambda answer: [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        )

    async def addresses(self, name: str, rdtype: str) -> Values:
        """A or AAAA records of ``name``, as text."""
        return await self._lookup(name, rdtype, lambda answer: [r.to_text() for r in answer])

    async def mx(self, name: str) -> Values:
        """The exchange names of ``name``'s MX records (a null MX's "." included)."""
        return await self._lookup(name, "MX", lambda answer: [r.exchange.to_text(omit_final_dot=True) for r in answer])

    async def ptr(self, name: str) -> Values:
        return await self._lookup(name, "PTR", lambda answer: [r.target.to_text(omit_final_dot=True) for r in answer])


async def each(coroutines: list[Coroutine[Any, Any, T]]) -> list[T]:
    """asyncio.gather of ``coroutines``, without a task when there is only one (with the answers cached, the
    lookups of a message never wait, and the tasks would be most of what they cost)."""
    if len(coroutines) == 1:
        return [await coroutines[0]]
    return list(await asyncio.gather(*coroutines))
