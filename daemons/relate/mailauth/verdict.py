"""What becomes of a message that arrived over port 25: SPF, DKIM and DMARC, the header, and the action.

Policy, in order:

1. SPF for MAIL FROM (or postmaster@HELO for the null reverse-path) and,
   when MAIL FROM is not null, for the HELO name as well; DKIM for every
   signature; ARC (RFC 8617) when the message carries ARC sets; these run
   at once. Then DMARC for each From domain.
2. A From of a hosted domain must pass SPF or DKIM aligned with it
   (relaxed), whatever DMARC record the domain publishes: mail that claims
   to come from a hosted domain and does not is refused (``550 5.7.1``),
   or deferred (``451 4.7.0``) when DNS trouble made a check inconclusive.
   Mail between hosted users goes through submission and never needs this.
3. A DMARC ``fail`` whose disposition (after ``pct``) is ``reject`` is
   refused (``550 5.7.1``), or filed in Junk when
   ``smtp.mailauth.dmarc_reject`` is ``junk``; ``quarantine`` is filed in
   Junk; ``none`` is delivered. DMARC ``temperror`` and ``permerror``
   apply no policy. The one exception: an ARC chain that passes, on which
   a sealer of ``smtp.mailauth.arc_trusted_sealers`` (through trusted
   sealers only) saw ``dmarc=pass`` (relate.mailauth.arc) overrides the
   failure, and the mail is delivered (forwarders and lists that change
   the message); when DNS trouble left that chain undecided, 451 4.7.0.
   It never overrides step 2.
4. Every message delivered gets one ``Authentication-Results:`` field with
   all these results (RFC 8601), at the top; fields already in the message
   claiming our authserv-id are removed (:mod:`relate.mailauth.authres`).

Authenticated submission gets ``auth=pass smtp.auth=LOGIN`` instead
(RFC 8601 §2.7.4): its sender is known, and its From was checked against
the user's addresses already.

Cost: the header section is read (at most ``MAX_HEADER_SECTION``); the whole
message only when it carries a DKIM signature or ARC sets, verified on the event
loop up to ``DKIM_ON_LOOP`` bytes times signatures (and ARC sets, at most
``ARC_SETS_ON_LOOP`` of them) and in a worker thread beyond. DNS answers come
from the process's answer cache (relate.mailauth.dns) when warm; parsed SPF and DMARC records, public
suffix lookups and the hosted-domain answers (``HOSTED_CACHE_SECONDS``) are kept too. When the first lookup
of each check is cached, SPF and DKIM run one after the other rather than as concurrent tasks (which cost
more than the checks of a known sender). The header section is read for DKIM once, for finding the signatures
and verifying them (relate.mailauth.dkimverify).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from relate.config import Config, MailAuthConfig
from relate.mail.headers import leading_section
from relate.mail.mime import field_addresses
from relate.mail.spool import Spool
from relate.mailauth import arc, authres, dkimverify, dmarc
from relate.mailauth import dkim as dkimv
from relate.mailauth.dns import Dns, TempError
from relate.mailauth.spf import SpfResult, check_helo, check_mail_from, valid_domain

MAX_HEADER_SECTION = 1024 * 1024
# A message whose size times its signatures is up to this is verified on the event loop (about 1 ms per
# signature of 64 KiB); larger work in a worker thread, whose hand-off costs more than a small verification.
DKIM_ON_LOOP = 128 * 1024
# An ARC chain of more sets than this is validated in a worker thread whatever the size: each set adds two
# signatures over a header growing with the chain (10 sets of a 19 KB message: about 11 ms of CPU; 3: 2.5).
ARC_SETS_ON_LOOP = 3
# Whether a From domain is hosted here is asked of the database once per this many seconds: a domain added
# is protected from forgery within that time.
HOSTED_CACHE_SECONDS = 30.0
HEADER_ON_LOOP = 16 * 1024  # a header section up to this size is read on the event loop (see _read_header)
MAX_AUTHOR_DOMAINS = 10  # DMARC is looked up for at most this many From domains (more: permerror)
_FROM_FIELD = re.compile(rb"^from[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_AT_DOMAIN = re.compile(rb"@[ \t]*([A-Za-z0-9][A-Za-z0-9.\-]*[A-Za-z0-9])")

# Entered around each step that holds the message whole in memory (the SMTP daemon's memory budget).
Hold = Callable[[int], AbstractAsyncContextManager[object]]

DELIVER = "deliver"
JUNK = "junk"
REFUSE = "refuse"
DEFER = "defer"


@dataclass(frozen=True)
class Verdict:
    action: str  # deliver, junk, refuse, defer
    header: bytes  # the Authentication-Results field to put at the top ("" when checks are off)
    reason: str = ""  # for the log
    spf: SpfResult | None = None
    dkim: list[dkimv.DkimResult] = field(default_factory=list)
    dmarc: dmarc.DmarcResult | None = None
    arc: arc.ArcResult = arc.NONE
    section: bytes | None = None  # the header section without forged fields of ours, when it had some
    section_size: int = 0  # the size of the original header section (what ``section`` replaces)


def header_section(head: bytes) -> bytes:
    """The header section at the start of ``head``, blank line included (all of ``head`` when it has none)."""
    return leading_section(head) or head


def from_domains(section: bytes) -> tuple[list[str], bool]:
    """(the From domains, whether the From field could be read without doubt)."""
    found = field_addresses(section, "From")
    if found is not None and found and _one_from_field(section):
        domains = [a.rpartition("@")[2].strip().lower().rstrip(".") for a in found]
        return [d for d in dict.fromkeys(domains) if d], True
    # Unreadable, absent or repeated: every domain that appears after an "@" in any From field, to catch a
    # hosted domain hidden in a field readers disagree on.
    domains = [m.decode("ascii").lower() for v in _FROM_FIELD.findall(section) for m in _AT_DOMAIN.findall(v)]
    return list(dict.fromkeys(domains)), False


def _one_from_field(section: bytes) -> bool:
    """Whether ``section``, which has a From field, has only one: the lines starting "from" counted (in C) and,
    only when there are several, the fields among them (what ``_FROM_FIELD`` finds, each at such a line)."""
    lowered = section.lower()
    if lowered.count(b"\nfrom") + lowered.startswith(b"from") == 1:
        return True
    return len(_FROM_FIELD.findall(section)) == 1


def authserv_id(cfg: Config) -> str:
    """Our authserv-id (RFC 8601 §2.5): ``smtp.mailauth.authserv_id``, else the host name."""
    return (cfg.smtp.mailauth.authserv_id or cfg.hostname).strip()


def submission_results(cfg: Config, login: str) -> bytes:
    """The field for mail an authenticated user sent (SMTP submission, the REST send path): ``auth=pass``
    (RFC 8601 §2.7.4) with the login; "" when the checks are off."""
    if not cfg.smtp.mailauth.enabled:
        return b""
    return authres.render(authserv_id(cfg), [authres.Entry("auth", "pass", properties={"smtp.auth": login})])


@dataclass(frozen=True)
class _Header:
    """What the checks need of the header section, read in one go."""

    size: int  # of the header section
    stripped: bytes | None  # the section without fields claiming our authserv-id; None: it has none
    signatures: list[dkimv.Signature]
    fields: dkimverify.Message  # the section as DKIM reads it, which verification reuses
    chain: arc.Chain | None
    authors: list[str]
    readable: bool


def _parse_header(section: bytes, ours: str) -> _Header:
    authors, readable = from_domains(section)
    stripped = authres.strip_ours(section, ours)
    fields = dkimverify.read_header(section)
    signatures = dkimv.find_signatures(section, fields)
    return _Header(len(section), stripped, signatures, fields, arc.find_chain(section), authors, readable)


async def _read_header(section: bytes, ours: str) -> _Header:
    """The header section read here when it is small, in a worker thread when it is not (1 MiB of hostile
    addresses takes tens of milliseconds; a thread's hand-off costs more than reading a small one)."""
    if len(section) <= HEADER_ON_LOOP:
        return _parse_header(section, ours)
    return await asyncio.to_thread(_parse_header, section, ours)


class Checker:
    """The SMTP daemon's checks: one per process, sharing the resolver (and its cache)."""

    def __init__(self, config: Config, dns: Dns, hosted: Callable[[list[str]], Awaitable[set[str]]]) -> None:
        self.config = config
        self.cfg: MailAuthConfig = config.smtp.mailauth
        self.authserv_id = authserv_id(config)
        self.dns = dns
        self.hosted = hosted
        self._hosted_cache: dict[str, tuple[bool, float]] = {}  # domain: (hosted, valid until)

    async def prepare(self) -> None:
        """Load the public suffix list off the event loop (once per process)."""
        if not dmarc.loaded():
            await asyncio.to_thread(dmarc.load)

    async def _hosted(self, domains: list[str]) -> set[str]:
        """Which of ``domains`` are hosted here, each answer kept for ``HOSTED_CACHE_SECONDS``."""
        now = time.monotonic()
        if len(self._hosted_cache) > 10_000:
            self._hosted_cache.clear()
        unknown = [d for d in domains if self._hosted_cache.get(d, (False, 0.0))[1] <= now]
        if unknown:
            found = await self.hosted(unknown)
            for d in unknown:
                self._hosted_cache[d] = (d in found, now + HOSTED_CACHE_SECONDS)
        return {d for d in domains if self._hosted_cache[d][0]}

    async def submitted(self, head: bytes, login: str) -> Verdict:
        """Authenticated submission: ``auth=pass`` with the login (RFC 8601 §2.7.4)."""
        if not self.cfg.enabled:
            return Verdict(DELIVER, b"")
        header = await _read_header(header_section(head), self.authserv_id)
        results = submission_results(self.config, login)
        return Verdict(DELIVER, results, section=header.stripped, section_size=header.size)

    async def inbound(
        self, *, client: str, helo: str, mail_from: str, head: bytes, spool: Spool, hold: Hold
    ) -> Verdict:
        """The verdict on a message that arrived over port 25 (see the module docstring)."""
        if not self.cfg.enabled:
            return Verdict(DELIVER, b"")
        await self.prepare()
        header = await _read_header(header_section(head), self.authserv_id)
        signatures, chain = header.signatures, header.chain

        async def signed() -> tuple[list[dkimv.DkimResult], arc.ArcResult]:
            if not signatures and chain is None:
                return [], arc.NONE
            if not signatures and chain is not None and chain.problem:
                return [], arc.verify(b"", chain, {})  # fails unverified: the message is not read
            arc_keys: dict[bytes, str | TempError | None] = {}
            if chain is None:
                keys = await dkimv.fetch_keys(self.dns, signatures)
            else:
                keys, arc_keys = await asyncio.gather(
                    dkimv.fetch_keys(self.dns, signatures), arc.fetch_keys(self.dns, chain)
                )
            # The verifier holds the message, its body and the canonical body: about three copies.
            async with hold(spool.size * 3 // 2):
                whole = await spool.read()
                # Each signature and ARC set canonicalises the body once.
                sets = chain.instances if chain is not None and not chain.problem else 0
                if len(whole) * (len(signatures) + sets) <= DKIM_ON_LOOP and sets <= ARC_SETS_ON_LOOP:
                    return _verify(whole, header.fields, signatures, keys, chain, arc_keys)
                return await asyncio.to_thread(_verify, whole, header.fields, signatures, keys, chain, arc_keys)

        async def helo_result() -> SpfResult | None:
            if not mail_from or not valid_domain(helo):
                return None
            return await check_helo(self.dns, client, helo)

        first = [mail_from.rpartition("@")[2] if mail_from else helo, helo]
        first += [f"{s.selector}._domainkey.{s.domain}" for s in signatures[: dkimv.MAX_SIGNATURES] if not s.problem]
        if chain is None and all(self.dns.kept(name) for name in first):
            # The first lookups of each check answered from the cache: one after the other, without the three
            # tasks a gather makes (what the checks of a known sender cost most, after the DKIM hashes).
            spf, spf_helo, (dkim, arc_result) = (
                await check_mail_from(self.dns, client, mail_from, helo),
                await helo_result(),
                await signed(),
            )
        else:
            spf, spf_helo, (dkim, arc_result) = await asyncio.gather(
                check_mail_from(self.dns, client, mail_from, helo), helo_result(), signed()
            )
        authors, readable = header.authors, header.readable
        if readable and len(authors) <= MAX_AUTHOR_DOMAINS:
            result = await dmarc.evaluate(self.dns, authors, spf, dkim)
        else:
            reason = "From unreadable" if not readable else f"From names more than {MAX_AUTHOR_DOMAINS} domains"
            result = dmarc.DmarcResult("permerror", authors[0] if authors else "", reason=reason)
        action, reason, override = await self._decide(authors, result, spf, dkim, arc_result)
        field = authres.render(self.authserv_id, _entries(client, spf, spf_helo, dkim, arc_result, result, override))
        return Verdict(action, field, reason, spf, dkim, result, arc_result, header.stripped, header.size)

    async def _decide(
        self,
        authors: list[str],
        result: dmarc.DmarcResult,
        spf: SpfResult,
        dkim: list[dkimv.DkimResult],
        arc_result: arc.ArcResult,
    ) -> tuple[str, str, str]:
        """(action, reason for the log, the trusted ARC sealer whose word overrode a DMARC failure or "")."""
        hosted = await self._hosted(authors) if authors else set()
        if hosted:
            aligned = {a for a in hosted if dmarc.aligned_pass(a, spf, dkim, adkim="r", aspf="r")}
            if aligned != hosted:
                unsure = spf.result == "temperror" or any(d.result == "temperror" for d in dkim)
                domain = sorted(hosted - aligned)[0]
                return (DEFER if unsure else REFUSE), f"From of hosted domain {domain} not authenticated", ""
        if result.result != "fail" or result.disposition not in ("reject", "quarantine"):
            return DELIVER, "", ""
        trusted = self.cfg.arc_trusted_sealers
        sealer = arc.vouched(arc_result, trusted)
        if sealer:
            return DELIVER, f"DMARC fail of {result.author} overridden: ARC sealed by {sealer}", sealer
        if arc_result.unsure and arc.trusted(arc_result.sealer, trusted):
            return DEFER, f"DMARC fail of {result.author}; ARC of {arc_result.sealer}: {arc_result.reason}", ""
        if result.disposition == "reject":
            return (JUNK if self.cfg.dmarc_reject == "junk" else REFUSE), f"DMARC p=reject of {result.author}", ""
        return JUNK, f"DMARC p=quarantine of {result.author}", ""


def _verify(
    message: bytes,
    fields: dkimverify.Message,
    signatures: list[dkimv.Signature],
    keys: dict[int, str | Exception],
    chain: arc.Chain | None,
    arc_keys: dict[bytes, str | TempError | None],
) -> tuple[list[dkimv.DkimResult], arc.ArcResult]:
    """DKIM and ARC of one message with the keys fetched (CPU: see Checker.inbound for where it runs)."""
    dkim = dkimv.verify(message, signatures, keys, fields) if signatures else []
    return dkim, (arc.verify(message, chain, arc_keys) if chain is not None else arc.NONE)


def _entries(
    client: str,
    spf: SpfResult,
    spf_helo: SpfResult | None,
    dkim: list[dkimv.DkimResult],
    arc_result: arc.ArcResult,
    result: dmarc.DmarcResult,
    override: str,
) -> list[authres.Entry]:
    reasonable = ("permerror", "temperror", "fail", "neutral")
    out = []
    mailfrom = {"smtp.mailfrom": spf.sender} if spf.sender else {}
    out.append(authres.Entry("spf", spf.result, spf.reason if spf.result in reasonable else "", mailfrom))
    if spf_helo is not None:
        reason = spf_helo.reason if spf_helo.result in reasonable else ""
        out.append(authres.Entry("spf", spf_helo.result, reason, {"smtp.helo": spf_helo.domain}))
    if not dkim:
        out.append(authres.Entry("dkim", "none"))
    for d in dkim:
        props = {"header.d": d.domain, "header.s": d.selector, "header.a": d.algorithm, "header.b": d.b}
        props = {k: v for k, v in props.items() if v}
        out.append(authres.Entry("dkim", d.result, d.reason if d.result in reasonable else "", props))
    out.append(arc.entry(arc_result, client))
    props = {"header.from": result.author} if result.author else {}
    comment = f"p={result.policy} dis={result.disposition}" if result.result in ("pass", "fail") else ""
    if override:  # a local policy override (RFC 7489 §7.2's PolicyOverride, "trusted_forwarder")
        comment += f" override=arc as.d={override}"
    reason = result.reason if result.result in reasonable else ""
    out.append(authres.Entry("dmarc", result.result, reason, props, comment))
    return out


async def rewrite(spool: Spool, verdict: Verdict, prefix: bytes = b"") -> Spool:
    """The message with the verdict's header section (forged fields of ours removed) in place of its own, and
    ``prefix`` (fields to add) before it; the spool itself when nothing changes."""
    if verdict.section is None and not prefix:
        return spool
    out = Spool()
    await out.write(prefix)
    if verdict.section is None:
        skip = 0
    else:
        await out.write(verdict.section)
        skip = verdict.section_size
    async for chunk in spool.chunks():
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        await out.write(memoryview(chunk)[skip:])
        skip = 0
    return out
