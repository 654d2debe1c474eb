"""MTA-STS (RFC 8461) in the delivery daemon: which policy a recipient domain has, fetched, cached and checked.

Policy:

- Discovery (§3.1, §5.1): before mail to a domain goes out (not through a
  smarthost), its ``_mta-sts`` TXT record is looked up through the daemon's
  resolver. One valid ``v=STSv1`` record gives the policy's ``id``.
- Cache: policies live in PostgreSQL (``mta_sts_policies``), shared by every
  delivery daemon, each valid for its ``max_age`` from when it was fetched.
  A cached, unexpired policy whose id is the TXT record's is used as it is;
  another id (or none cached) means a fetch. With no TXT record, or none to
  be had (DNS trouble), an unexpired cached policy still applies (§5.1).
- Fetch (§3.3): ``GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt``, the
  certificate verified (``delivery.tls_ca_file``, else the system store), the
  name resolved through the daemon's resolver, no redirects followed, only a
  200 with ``text/plain``, at most 64 KiB, all within
  ``delivery.connect_timeout``. A fetch that fails leaves the cached policy
  (if unexpired) in force, else none: mail goes as if the domain had no
  policy (§5.1), and the log says why, once per fetch. This daemon does not
  try that domain's policy (that id) again for ``RETRY_FAILED`` (5 minutes):
  a policy server that hangs delays the domain's mail once, not every pass.
- Proactive refresh (§10.2 asks senders to refresh cached policies before
  they expire, e.g. daily, so that an attacker who blocks the TXT lookup
  cannot make one lapse): :meth:`MtaSts.refresh`, run by the delivery loop
  every ``REFRESH_SECONDS``, fetches again each unexpired cached policy that
  is older than ``REFRESH_AFTER`` (a day) or half its ``max_age`` when that
  is shorter, for a domain this daemon has sent to since the policy was
  fetched (traffic keeps a policy warm; a domain mailed once is not polled
  for ever). The id comes from the TXT record as usual; without one (gone,
  or DNS trouble) the cached policy is left to run its course (§5.1). A
  failed refresh leaves the cached policy as it was, to be tried again the
  next time. At most ``REFRESH_BATCH`` domains a time, ``REFRESH_PARALLEL``
  at once; daemons sharing the database skip what another just refreshed.
- What the policy does (§5): relate.queue.client applies it. ``enforce``:
  only MX hosts the policy lists, only over STARTTLS with a certificate
  verified for the MX name; otherwise the mail waits (deferred, the reason
  in the queue and, in the end, in the DSN). ``testing``: delivery as
  without a policy, and each failure that enforce would have refused is
  logged (``delivery-mta-sts-testing``). ``none``: nothing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import aiohttp.abc
import asyncpg
import dns.asyncresolver
import dns.exception
import dns.resolver

from relate.config import DeliveryConfig
from relate.mail.mtasts import MAX_POLICY_BYTES, Policy, PolicyError, parse_policy, txt_id
from relate.mailauth.dns import Dns, TempError
from relate.store import mtasts as store

log = logging.getLogger("relate.delivery")

WELL_KNOWN = "/.well-known/mta-sts.txt"
# A failed fetch of a domain's policy (one id) is not tried again by this daemon for this long.
RETRY_FAILED = timedelta(minutes=5)
# Proactive refresh (see the module docstring).
REFRESH_AFTER = timedelta(days=1)
REFRESH_BATCH = 100
REFRESH_PARALLEL = 4
MAX_USED = 10_000  # domains whose last use this daemon remembers (least recent forgotten first)


class FetchError(Exception):
    """The policy could not be fetched or read."""


class _Resolver(aiohttp.abc.AbstractResolver):
    """aiohttp's host lookups through the daemon's dnspython resolver (so its servers and cache apply)."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self._resolver = resolver

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        found: list[Any] = []
        for rdtype, fam in (("A", socket.AF_INET), ("AAAA", socket.AF_INET6)):
            try:
                answer = await self._resolver.resolve(host, rdtype, search=False)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as exc:
                raise OSError(f"looking up {rdtype} of {host}: {type(exc).__name__}") from None
            found += [
                {"hostname": host, "host": r.to_text(), "port": port, "family": fam, "proto": 0, "flags": 0}
                for r in answer
            ]
        if not found:
            raise OSError(f"{host} has no address")
        return found

    async def close(self) -> None:
        return None


class MtaSts:
    """The policies of recipient domains, for one delivery daemon (see the module docstring)."""

    def __init__(
        self,
        cfg: DeliveryConfig,
        pool: asyncpg.Pool,
        resolver: dns.asyncresolver.Resolver,
        clock: Callable[[], datetime],
    ) -> None:
        self.cfg = cfg
        self.pool = pool
        self.resolver = resolver
        self.dns = Dns(resolver)
        self.clock = clock
        self._verified: ssl.SSLContext | None = None
        self._failed: dict[tuple[str, str], datetime] = {}  # (domain, id) -> until when not to fetch it again
        self._used: OrderedDict[str, datetime] = OrderedDict()  # domain -> when mail to it last asked for its policy

    async def verified_context(self) -> ssl.SSLContext:
        """A client context that verifies certificates and host names (made once, off the event loop: loading
        the system store takes about 0.1 s)."""
        if self._verified is None:
            cafile = str(self.cfg.tls_ca_file) if self.cfg.tls_ca_file is not None else None
            context = await asyncio.to_thread(ssl.create_default_context, cafile=cafile)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._verified = context
        return self._verified

    async def policy_for(self, domain: str) -> Policy | None:
        """The policy in force for ``domain`` now, or None (§5.1, as the module docstring says)."""
        domain = domain.lower()
        self._use(domain)
        try:
            policy_id = txt_id(await self.dns.txt(f"_mta-sts.{domain}") or [])
        except TempError:
            policy_id = None
        cached = await store.get(self.pool, domain)
        now = self.clock()
        valid = cached if cached is not None and cached.expires_at > now else None
        if policy_id is None or (valid is not None and valid.policy_id == policy_id):
            return valid.policy if valid is not None else None
        if self._failed.get((domain, policy_id), now) > now:
            return valid.policy if valid is not None else None
        try:
            policy = await self.fetch(domain)
        except FetchError as exc:
            self._failed = {k: until for k, until in self._failed.items() if until > now}  # forget the old ones
            self._failed[(domain, policy_id)] = now + RETRY_FAILED
            log.warning(
                "delivery-mta-sts-fetch-failed domain=%s id=%s error=%s: %s",
                domain,
                policy_id,
                exc,
                "keeping the cached policy" if valid is not None else "delivering as without a policy",
            )
            return valid.policy if valid is not None else None
        await store.put(self.pool, domain, policy_id, policy, now)
        log.info(
            "delivery-mta-sts-policy domain=%s id=%s mode=%s mx=%s max_age=%d",
            domain,
            policy_id,
            policy.mode,
            ",".join(policy.mx) or "-",
            policy.max_age,
        )
        return policy

    def _use(self, domain: str) -> None:
        self._used[domain] = self.clock()
        self._used.move_to_end(domain)
        while len(self._used) > MAX_USED:
            self._used.popitem(last=False)

    async def refresh(self) -> int:
        """Fetch again the cached policies due for a proactive refresh (see the module docstring); how many were
        refreshed."""
        if not self._used:
            return 0
        now = self.clock()
        cached = await store.get_many(self.pool, list(self._used))
        due = [
            domain
            for domain, c in cached.items()
            if now < c.expires_at
            and now >= c.fetched_at + min(REFRESH_AFTER, timedelta(seconds=c.policy.max_age / 2))
            and self._used.get(domain, c.fetched_at) > c.fetched_at
        ]
        due.sort(key=lambda d: cached[d].expires_at)  # the nearest to expiry first
        parallel = asyncio.Semaphore(REFRESH_PARALLEL)

        async def one(domain: str) -> bool:
            async with parallel:
                return await self._refresh_one(domain, cached[domain])

        done = await asyncio.gather(*(one(d) for d in due[:REFRESH_BATCH]))
        return sum(done)

    async def _refresh_one(self, domain: str, cached: store.Cached) -> bool:
        try:
            policy_id = txt_id(await self.dns.txt(f"_mta-sts.{domain}") or [])
        except TempError:
            policy_id = None
        if policy_id is None:
            return False  # no record to be had: the cached policy runs its course (§5.1)
        try:
            policy = await self.fetch(domain)
        except FetchError as exc:
            log.warning(
                "delivery-mta-sts-refresh-failed domain=%s id=%s error=%s: the cached policy stays until %s",
                domain,
                policy_id,
                exc,
                cached.expires_at.isoformat(timespec="seconds"),
            )
            return False
        now = self.clock()
        await store.put(self.pool, domain, policy_id, policy, now)
        log.info(
            "delivery-mta-sts-refreshed domain=%s id=%s mode=%s max_age=%d (was id=%s mode=%s)",
            domain,
            policy_id,
            policy.mode,
            policy.max_age,
            cached.policy_id,
            cached.policy.mode,
        )
        return True

    async def fetch(self, domain: str) -> Policy:
        """GET the policy of ``domain`` over verified HTTPS (§3.3); raises FetchError."""
        port = "" if self.cfg.mta_sts_port == 443 else f":{self.cfg.mta_sts_port}"
        url = f"https://mta-sts.{domain}{port}{WELL_KNOWN}"
        connector = aiohttp.TCPConnector(
            ssl=await self.verified_context(), resolver=_Resolver(self.resolver), force_close=True
        )
        timeout = aiohttp.ClientTimeout(total=self.cfg.connect_timeout)
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.get(url, allow_redirects=False) as response,
            ):
                if response.status != 200:
                    raise FetchError(f"{url}: HTTP {response.status}")
                if response.content_type != "text/plain":
                    raise FetchError(f"{url}: Content-Type {response.content_type[:60]}, not text/plain")
                body = bytearray()
                while chunk := await response.content.read(16 * 1024):
                    body += chunk
                    if len(body) > MAX_POLICY_BYTES:
                        raise FetchError(f"{url}: larger than {MAX_POLICY_BYTES} bytes")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            text = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise FetchError(f"{url}: {type(exc).__name__}{': ' + text if text else ''}") from None
        try:
            return parse_policy(bytes(body))
        except PolicyError as exc:
            raise FetchError(f"{url}: {exc}") from None
