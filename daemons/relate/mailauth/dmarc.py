"""DMARC (RFC 7489): policy discovery, identifier alignment with the public suffix list, p/sp/pct.

Policy:

- The RFC5322.From domain is the author domain; a message whose From names
  several domains is judged for each, and the worst result stands (§6.6.1
  leaves the choice to the receiver; taking the best would let a forger add
  a domain of their own).
- Policy discovery (§6.6.3): ``_dmarc.<author domain>`` TXT, else
  ``_dmarc.<organizational domain>``; records that do not start with
  ``v=DMARC1`` are ignored, and more than one valid record is as good as
  none. The organizational domain is the public suffix list's registrable
  domain (the ``publicsuffixlist`` package, loaded once per process).
- ``p`` applies to the domain that published it; ``sp`` (default: ``p``) to
  its subdomains when the record was found at the organizational domain. A
  ``p`` that is missing or unknown reads as ``none`` (§6.6.3 step 6).
- Alignment (§3.1): ``adkim``/``aspf`` ``r`` (default; the organizational
  domains are equal) or ``s`` (the domains are equal). DMARC passes when a
  passing SPF result's domain (MAIL FROM, or HELO for the null reverse-path)
  or a passing DKIM signature's ``d=`` is aligned with the author domain.
- ``pct`` (§6.6.4): a failing message is sampled; outside the sample the
  policy drops one step (reject to quarantine, quarantine to none).
- DNS trouble finding the record is ``temperror``: no policy is applied.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from relate.mailauth.dkim import DkimResult
from relate.mailauth.dns import Dns, TempError
from relate.mailauth.spf import SpfResult

POLICIES = ("none", "quarantine", "reject")
_SEVERITY = {"pass": 0, "none": 1, "temperror": 2, "permerror": 3, "fail": 4}
_psl: PublicSuffixList | None = None


def loaded() -> bool:
    return _psl is not None


def load() -> None:
    """Read the public suffix list (a quarter of a second: call it off the event loop, once)."""
    global _psl
    if _psl is None:
        _psl = PublicSuffixList()


@functools.lru_cache(maxsize=4096)
def org_domain(domain: str) -> str:
    """The organizational domain (§3.2): the registrable domain, or the domain itself when it is a suffix (kept
    per name: the same senders' domains come back with every message, and each lookup walks the list's labels)."""
    load()
    assert _psl is not None
    domain = domain.lower().rstrip(".")
    return _psl.privatesuffix(domain) or domain


def aligned(identifier: str, author: str, *, strict: bool) -> bool:
    identifier, author = identifier.lower().rstrip("."), author.lower().rstrip(".")
    if strict:
        return identifier == author
    return bool(identifier) and org_domain(identifier) == org_domain(author)


@dataclass(frozen=True)
class Record:
    p: str
    sp: str
    adkim: str
    aspf: str
    pct: int
    at: str  # the domain the record was found at (author or organizational domain)


@functools.lru_cache(maxsize=1024)
def parse_record(text: str, at: str) -> Record | None:
    """A ``v=DMARC1`` record's tags (§6.3), or None when it is not one."""
    parts = [p.strip() for p in text.split(";")]
    if not parts or parts[0].replace(" ", "") != "v=DMARC1":
        return None
    tags: dict[str, str] = {}
    for part in parts[1:]:
        name, eq, value = part.partition("=")
        if eq:
            tags.setdefault(name.strip().lower(), value.strip())
    p = tags.get("p", "").lower()
    p = p if p in POLICIES else "none"
    sp = tags.get("sp", "").lower()
    sp = sp if sp in POLICIES else p
    try:
        pct = min(100, max(0, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    adkim = "s" if tags.get("adkim", "r").lower() == "s" else "r"
    aspf = "s" if tags.get("aspf", "r").lower() == "s" else "r"
    return Record(p, sp, adkim, aspf, pct, at)


async def discover(dns: Dns, author: str) -> Record | None:
    """The record that governs ``author`` (§6.6.3); raises TempError."""
    org = org_domain(author)
    for at in dict.fromkeys((author, org)):
        found = [r for r in (parse_record(t, at) for t in await dns.txt(f"_dmarc.{at}") or ()) if r is not None]
        if len(found) == 1:
            return found[0]
        if found:
            return None  # several records: none applies
    return None


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass, fail, none, temperror, permerror
    author: str  # the From domain judged (the worst one, when there were several)
    policy: str = "none"  # what the record asks for this domain: none, quarantine, reject
    disposition: str = "none"  # what to do after pct: none, quarantine, reject (only for fail)
    aligned: bool = False  # SPF or DKIM passed aligned (relaxed), whatever the record
    reason: str = ""


def aligned_pass(author: str, spf: SpfResult, dkim: list[DkimResult], *, adkim: str, aspf: str) -> bool:
    if spf.result == "pass" and aligned(spf.domain, author, strict=aspf == "s"):
        return True
    return any(d.result == "pass" and aligned(d.domain, author, strict=adkim == "s") for d in dkim)


async def evaluate_domain(dns: Dns, author: str, spf: SpfResult, dkim: list[DkimResult]) -> DmarcResult:
    loose = aligned_pass(author, spf, dkim, adkim="r", aspf="r")
    try:
        record = await discover(dns, author)
    except TempError as exc:
        return DmarcResult("temperror", author, aligned=loose, reason=str(exc))
    if record is None:
        return DmarcResult("none", author, aligned=loose, reason="no DMARC record")
    policy = record.p if record.at == author else record.sp
    if aligned_pass(author, spf, dkim, adkim=record.adkim, aspf=record.aspf):
        return DmarcResult("pass", author, policy, aligned=True)
    disposition = policy
    if record.pct < 100 and random.random() * 100 >= record.pct:  # noqa: S311 (sampling, not secrecy)
        disposition = {"reject": "quarantine", "quarantine": "none", "none": "none"}[policy]
    reason = "no aligned SPF or DKIM pass"
    return DmarcResult("fail", author, policy, disposition, aligned=loose, reason=reason)


async def evaluate(dns: Dns, authors: list[str], spf: SpfResult, dkim: list[DkimResult]) -> DmarcResult:
    """The worst result over every author domain (see the module docstring); permerror without any."""
    if not authors:
        return DmarcResult("permerror", "", reason="no readable From domain")
    results = [await evaluate_domain(dns, a, spf, dkim) for a in dict.fromkeys(authors)]
    return max(results, key=lambda r: (_SEVERITY[r.result], POLICIES.index(r.disposition)))
