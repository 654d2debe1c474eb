"""`relatectl domain check`: what live DNS says about a hosted domain, against what this host needs.

Every lookup goes through the daemons' resolver settings (``delivery.dns_servers``),
so the answer is what the delivery daemon and remote servers see. Each check
ends ``ok``, ``warn`` (works, but worth changing), ``fail`` (mail will not
arrive or will not be accepted), or ``skip`` (does not apply here), and each
problem comes with the exact record to publish (or what to run). Problems
are to be fixed in this order, failures before warnings:

1. MX: an MX record of the domain names this host (``hostname``) or a name
   with one of this host's addresses. Without it no mail arrives.
2. SPF: the domain's one ``v=spf1`` record gives ``pass`` for every
   outbound address (evaluated with relate.mailauth's own SPF code). The fix
   keeps the record and puts the missing ``ip4:``/``ip6:`` terms first.
3. DKIM: the selector of the domain's active key publishes that very key (and a pending new key's, a warning).
4. DMARC: a ``v=DMARC1`` record governs the domain (its own, or the
   organizational domain's); ``p=none`` is a warning.
5. Reverse DNS, forward-confirmed: each outbound address has a PTR record
   naming the HELO name (``hostname``), and that name resolves to the address.
6. Certificate: the certificate port 25 offers covers this host's name and
   every MX name that points here, and is in date; a self-signed one is a
   warning (senders that verify will not use it).
7. MTA-STS (RFC 8461 §3.1): absent is a warning; present, it must be one
   ``v=STSv1`` record with a valid ``id``, and the policy fetched as senders
   fetch it (relate.queue.mtasts: verified HTTPS, ``delivery.tls_ca_file``)
   must cover this host's name and the MX names that point here; a policy
   in ``testing`` or ``none`` mode is a warning.
8. TLS-RPT (RFC 8460 §3): absent is a warning; present, one ``v=TLSRPTv1``
   record whose every ``rua`` is a ``mailto:`` or ``https:`` URI.

Outbound addresses are ``delivery.outbound_addresses``, else what
``hostname`` resolves to. With a smarthost, SPF and reverse DNS are the
smarthost operator's: those checks are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import dns.reversename
from cryptography.exceptions import UnsupportedAlgorithm

from relate.config import Config
from relate.errors import NotFound
from relate.mail import dkim, mtasts
from relate.mail.address import normalize_domain
from relate.mailauth import dmarc, spf
from relate.mailauth.dns import Dns, TempError
from relate.queue.mtasts import FetchError, MtaSts
from relate.runtime.resolver import make_resolver
from relate.runtime.tls import certificate_summary
from relate.services.dns import txt_strings
from relate.store import accounts
from relate.store import dkim as dkim_store

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
ORDER = ("MX", "SPF", "DKIM", "DMARC", "reverse DNS", "certificate", "MTA-STS", "TLS-RPT")
TTL = 3600


@dataclass(frozen=True)
class Check:
    check: str  # one of ORDER
    state: str  # OK, WARN, FAIL, SKIP
    found: str  # what is there now, in short
    problem: str = ""
    fix: str = ""  # the record to publish (zone-file line), or what to do


@dataclass
class Report:
    domain: str
    host: str
    addresses: list[str]
    checks: list[Check] = field(default_factory=list)

    @property
    def fix_first(self) -> list[Check]:
        """The problems in the order to fix them: failures, then warnings, each in ORDER."""
        return [c for c in self.checks if c.state == FAIL] + [c for c in self.checks if c.state == WARN]

    @property
    def failed(self) -> bool:
        return any(c.state == FAIL for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "host": self.host,
            "addresses": self.addresses,
            "checks": [c.__dict__ for c in self.checks],
            "fix_first": [c.check for c in self.fix_first],
        }


def record(name: str, rdtype: str, value: str) -> str:
    """One zone-file line, ready to paste."""
    return f"{name}. {TTL} IN {rdtype} {value}"


def _tags(text: str) -> dict[str, str]:
    """``k=v; k=v`` tag lists (DKIM, MTA-STS, TLS-RPT): the first value of each tag, whitespace kept inside."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            tags.setdefault(name.strip().lower(), value.strip())
    return tags


def _dns_trouble(check: str, exc: TempError) -> Check:
    return Check(check, FAIL, "-", f"DNS did not answer: {exc}", "check the domain's name servers, then run this again")


@dataclass
class _Context:
    cfg: Config
    dns: Dns
    pool: asyncpg.Pool
    domain: str
    host: str
    addresses: list[str]
    mx_here: list[str] = field(default_factory=list)  # MX names that point at this host


async def check_domain(pool: asyncpg.Pool, cfg: Config, name: str) -> Report:
    """Every check of the module docstring for a hosted domain, in ORDER."""
    domain = normalize_domain(name)
    if await accounts.get_domain(pool, domain) is None:
        raise NotFound(f"domain {name} is not hosted here")
    await asyncio.to_thread(dmarc.load)  # the public suffix list, once
    resolver = make_resolver(cfg.delivery)
    dns_ = Dns(resolver)
    host = cfg.hostname.rstrip(".").lower()
    ctx = _Context(cfg, dns_, pool, domain, host, await _outbound_addresses(cfg, dns_, host))
    checks = [await _mx(ctx)]
    checks += await asyncio.gather(_spf(ctx), _dkim(ctx), _dmarc(ctx), _reverse(ctx))
    checks.append(_certificate(ctx))
    checks += await asyncio.gather(_mta_sts(ctx), _tls_rpt(ctx))
    return Report(domain, host, ctx.addresses, checks)


async def _outbound_addresses(cfg: Config, dns_: Dns, host: str) -> list[str]:
    if cfg.delivery.outbound_addresses:
        return [str(ipaddress.ip_address(a.strip())) for a in cfg.delivery.outbound_addresses]
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        with contextlib.suppress(TempError):  # then the checks that need them say they are unknown
            found += await dns_.addresses(host, rdtype) or []
    return found


async def _addresses_of(dns_: Dns, name: str) -> set[str]:
    found: set[str] = set()
    for rdtype in ("A", "AAAA"):
        found.update(await dns_.addresses(name, rdtype) or [])
    return found


async def _mx(ctx: _Context) -> Check:
    fix = record(ctx.domain, "MX", f"10 {ctx.host}.")
    try:
        exchanges = [x.lower() for x in await ctx.dns.mx(ctx.domain) or []]
        if not exchanges:
            return Check("MX", FAIL, "-", f"no MX record: mail to {ctx.domain} does not come here", fix)
        if all(x in ("", ".", "@") for x in exchanges):
            return Check("MX", FAIL, "null MX", f"a null MX (RFC 7505) says {ctx.domain} takes no mail", fix)
        ours = set(ctx.addresses)
        for x in exchanges:
            if x == ctx.host or (ours and ours & await _addresses_of(ctx.dns, x)):
                ctx.mx_here.append(x)
    except TempError as exc:
        return _dns_trouble("MX", exc)
    found = ", ".join(exchanges)
    if not ctx.mx_here:
        return Check("MX", FAIL, found, f"the MX records point at {found}, not at {ctx.host}", fix)
    return Check("MX", OK, found)


def _ip_term(address: str) -> str:
    return f"ip{ipaddress.ip_address(address).version}:{address}"


async def _spf(ctx: _Context) -> Check:
    smarthost = ctx.cfg.delivery.smarthost.host
    if smarthost:
        return Check("SPF", SKIP, f"mail leaves through the smarthost {smarthost}: SPF must authorise it")
    if not ctx.addresses:
        return Check("SPF", FAIL, "-", f"this host's outbound addresses are unknown ({ctx.host} has no address)")
    try:
        found = [t for t in await ctx.dns.txt(ctx.domain) or [] if t.lower().split(" ", 1)[0] == "v=spf1"]
    except TempError as exc:
        return _dns_trouble("SPF", exc)
    ours = " ".join(_ip_term(a) for a in ctx.addresses)
    if not found:
        fix = record(ctx.domain, "TXT", txt_strings(f"v=spf1 {ours} mx -all"))
        return Check("SPF", FAIL, "-", f"no SPF record: receivers cannot tell mail from {ctx.domain} from forgery", fix)
    if len(found) > 1:
        fix = record(ctx.domain, "TXT", txt_strings(f"v=spf1 {ours} mx -all")) + " (in place of all of them)"
        return Check("SPF", FAIL, f"{len(found)} records", "several SPF records: receivers treat that as an error", fix)
    text = found[0]
    failing: list[str] = []
    results: set[str] = set()
    for address in ctx.addresses:
        ip = spf.client_ip(address)
        assert ip is not None  # addresses come from DNS answers or validated config
        result, reason = await spf.check_host(ctx.dns, ip, ctx.domain, f"postmaster@{ctx.domain}", ctx.host)
        if result == "temperror":
            return _dns_trouble("SPF", TempError(reason))
        if result != "pass":
            failing.append(address)
            results.add(result if not reason else f"{result}: {reason}")
    if not failing:
        return Check("SPF", OK, text)
    missing = " ".join(_ip_term(a) for a in failing)
    rest = text.split(" ", 1)[1] if " " in text else "-all"
    fix = record(ctx.domain, "TXT", txt_strings(f"v=spf1 {missing} {rest}"))
    problem = f"the SPF record does not authorise {', '.join(failing)} ({'; '.join(sorted(results))})"
    return Check("SPF", FAIL, text, problem, fix)


async def _dkim(ctx: _Context) -> Check:
    key = await dkim_store.active(ctx.pool, ctx.domain)
    if key is None:
        return Check(
            "DKIM",
            FAIL,
            "no key",
            f"no DKIM key: mail from {ctx.domain} is sent unsigned",
            f"relatectl dkim keygen {ctx.domain}, then publish the record it prints",
        )
    name = f"{key['selector']}._domainkey.{ctx.domain}"
    expected = dkim.DkimKey(**{k: key[k] for k in dkim.KEY_FIELDS}).txt_record()
    fix = record(name, "TXT", txt_strings(expected))
    try:
        published = await ctx.dns.txt(name) or []
    except TempError as exc:
        return _dns_trouble("DKIM", exc)
    keys = ["".join(_tags(t).get("p", "").split()) for t in published]
    if key["public_key"] in keys:
        return await _pending_dkim(ctx) or Check("DKIM", OK, f"{name} ({key['algorithm']})")
    if not keys:
        return Check("DKIM", FAIL, "-", f"no DKIM record at {name}", fix)
    problem = f"{name} publishes another key than the one mail is signed with"
    return Check("DKIM", FAIL, f"{name}: another key", problem, fix)


async def _pending_dkim(ctx: _Context) -> Check | None:
    """A warning for a new key (``relatectl dkim keygen`` while another signs) whose record is not in DNS yet:
    the rotation waits for it, and the old key keeps signing meanwhile."""
    for key in await dkim_store.listing(ctx.pool, ctx.domain):
        if key["state"] != "pending":
            continue
        name = f"{key['selector']}._domainkey.{ctx.domain}"
        try:
            published = await ctx.dns.txt(name) or []
        except TempError as exc:
            return _dns_trouble("DKIM", exc)
        if key["public_key"] not in ["".join(_tags(t).get("p", "").split()) for t in published]:
            expected = dkim.DkimKey(key["selector"], key["algorithm"], "", key["public_key"]).txt_record()
            return Check(
                "DKIM",
                WARN,
                f"new key {key['selector']} not published",
                f"the new key {key['selector']} signs once {name} publishes it; the current key signs until then",
                record(name, "TXT", txt_strings(expected)),
            )
    return None


async def _dmarc(ctx: _Context) -> Check:
    fix = record(
        f"_dmarc.{ctx.domain}", "TXT", txt_strings(f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{ctx.domain}")
    )
    try:
        found = await dmarc.discover(ctx.dns, ctx.domain)
    except TempError as exc:
        return _dns_trouble("DMARC", exc)
    if found is None:
        return Check("DMARC", FAIL, "-", f"no DMARC record at _dmarc.{ctx.domain}", fix)
    where = "" if found.at == ctx.domain else f" (at _dmarc.{found.at})"
    if found.p == "none":
        problem = "p=none: receivers are asked to deliver mail that fails DMARC like any other"
        return Check("DMARC", WARN, f"p=none{where}", problem, fix)
    return Check("DMARC", OK, f"p={found.p}{where}")


async def _reverse(ctx: _Context) -> Check:
    smarthost = ctx.cfg.delivery.smarthost.host
    if smarthost:
        return Check("reverse DNS", SKIP, f"mail leaves through the smarthost {smarthost}")
    if not ctx.addresses:
        problem = f"{ctx.host} has no A or AAAA record, and delivery.outbound_addresses is empty"
        return Check("reverse DNS", FAIL, "-", problem, record(ctx.host, "A", "<this host's public IPv4 address>"))
    problems: list[str] = []
    fixes: list[str] = []
    found: list[str] = []
    try:
        forward = await _addresses_of(ctx.dns, ctx.host)
        for address in ctx.addresses:
            reverse = dns.reversename.from_address(address).to_text(omit_final_dot=True)
            names = [n.lower() for n in await ctx.dns.ptr(reverse) or []]
            found.append(f"{address} -> {', '.join(names) or '-'}")
            ptr_fix = f"{reverse}. IN PTR {ctx.host}. (set where {address} is managed: the hosting provider)"
            if not names:
                problems.append(f"{address} has no PTR record")
                fixes.append(ptr_fix)
            elif ctx.host not in names:
                problems.append(f"{address} resolves back to {', '.join(names)}, not to the HELO name {ctx.host}")
                fixes.append(ptr_fix)
            elif address not in forward:
                problems.append(f"{ctx.host} does not resolve to {address}")
                rdtype = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
                fixes.append(record(ctx.host, rdtype, address))
    except TempError as exc:
        return _dns_trouble("reverse DNS", exc)
    if problems:
        return Check("reverse DNS", FAIL, "; ".join(found), "; ".join(problems), "\n".join(fixes))
    return Check("reverse DNS", OK, "; ".join(found))


def _covers(pattern: str, name: str) -> bool:
    """RFC 6125 §6.4.3, as browsers do it: a wildcard only as the whole left-most label."""
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def _certificate(ctx: _Context) -> Check:
    mx = ctx.cfg.smtp.mx
    path = mx.cert if mx.cert is not None else ctx.cfg.tls.cert
    needed = list(dict.fromkeys([ctx.host, *ctx.mx_here]))
    where = "tls.cert and tls.key (or smtp.mx.cert and .key), then relatectl tls reload"
    fix = f"a certificate for {', '.join(needed)} in {where}"
    if path is None:
        return Check("certificate", FAIL, "-", "no certificate configured: port 25 offers no STARTTLS", fix)
    try:
        info = certificate_summary(Path(path))
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        return Check(
            "certificate", FAIL, str(path), f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}", fix
        )
    found = f"{', '.join(info.names) or info.subject}, until {info.not_after:%Y-%m-%d}"
    missing = [n for n in needed if not any(_covers(p, n) for p in info.names)]
    if missing:
        problem = f"the certificate {path} does not cover {', '.join(missing)}"
        return Check("certificate", FAIL, found, problem, fix)
    if info.not_after <= datetime.now(UTC):
        return Check("certificate", FAIL, found, f"the certificate {path} has expired", fix)
    if info.issuer == info.subject:
        problem = "self-signed: senders that verify certificates (MTA-STS enforce, DANE) will not deliver"
        return Check("certificate", WARN, found, problem, fix.replace("a certificate", "a CA-issued certificate", 1))
    return Check("certificate", OK, found)


async def _optional_record(ctx: _Context, check: str, name: str, version: str, absent: str, fix: str) -> Check | str:
    """The one ``version`` TXT record at ``name`` (MTA-STS, TLS-RPT: a record that starts with it), or the Check
    that ends the matter: DNS trouble, none (a warning: ``absent`` says what it costs), several (RFC 8461
    §3.1 and RFC 8460 §3: then senders ignore them all)."""
    try:
        found = [t for t in await ctx.dns.txt(name) or [] if t.startswith(version)]
    except TempError as exc:
        return _dns_trouble(check, exc)
    if not found:
        return Check(check, WARN, "-", absent, fix)
    if len(found) > 1:
        problem = f"several records at {name}: senders ignore them all"
        return Check(check, FAIL, f"{len(found)} records", problem, fix + " (in place of all of them)")
    return found[0]


async def _mta_sts(ctx: _Context) -> Check:
    name = f"_mta-sts.{ctx.domain}"
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    serve = (
        f"mta_sts.mode: testing (enforce once TLS reports are clean) in relate.yaml, and mta-sts.{ctx.domain}"
        f" routed to relate-api over HTTPS with a certificate for that name"
    )
    fix = record(name, "TXT", f'"v=STSv1; id={stamp}"') + "\n" + serve
    absent = "no MTA-STS record (optional): senders cannot insist on TLS to your MX"
    text = await _optional_record(ctx, "MTA-STS", name, "v=STSv1", absent, fix)
    if isinstance(text, Check):
        return text
    if mtasts.txt_id([text]) is None:
        return Check("MTA-STS", FAIL, text, f"the {name} record has no valid id=", fix)
    # The policy itself, fetched as a sender fetches it (relate.queue.mtasts), must cover our MX names.
    fetcher = MtaSts(ctx.cfg.delivery, ctx.pool, ctx.dns.resolver, lambda: datetime.now(UTC))
    try:
        policy = await fetcher.fetch(ctx.domain)
    except FetchError as exc:
        return Check("MTA-STS", FAIL, text, f"the policy cannot be fetched: {exc}", serve)
    found = f"{text}; mode {policy.mode}, mx {', '.join(policy.mx) or '-'}"
    missing = [n for n in dict.fromkeys([ctx.host, *ctx.mx_here]) if not policy.matches(n)]
    if missing:
        problem = f"the policy's mx lines do not cover {', '.join(missing)}: senders that enforce it refuse those"
        return Check("MTA-STS", FAIL, found, problem, f"mta_sts.mx in relate.yaml to include {', '.join(missing)}")
    if policy.mode != "enforce":
        return Check("MTA-STS", WARN, found, f"mode {policy.mode}: senders do not insist on TLS yet", serve)
    return Check("MTA-STS", OK, found)


async def _tls_rpt(ctx: _Context) -> Check:
    name = f"_smtp._tls.{ctx.domain}"
    fix = record(name, "TXT", f'"v=TLSRPTv1; rua=mailto:postmaster@{ctx.domain}"')
    absent = "no TLS-RPT record (optional): nobody tells you when TLS to your MX fails"
    text = await _optional_record(ctx, "TLS-RPT", name, "v=TLSRPTv1", absent, fix)
    if isinstance(text, Check):
        return text
    uris = [u.strip() for u in _tags(text).get("rua", "").split(",") if u.strip()]
    good = [u for u in uris if (u.startswith("mailto:") and "@" in u) or u.startswith("https://")]
    if not uris or len(good) != len(uris):
        return Check("TLS-RPT", FAIL, text, f"the rua= of {name} is not a mailto: or https: URI", fix)
    return Check("TLS-RPT", OK, text)
