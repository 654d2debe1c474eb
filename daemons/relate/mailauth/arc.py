"""ARC (RFC 8617): the Authenticated Received Chain of mail that intermediaries (lists, forwarders) sealed.

Policy:

- A message without ARC header fields is ``arc=none``. With some, the chain
  is validated as RFC 8617 §5.2 says, by dkimpy (``dkim.ARC``): every set
  complete and numbered 1..N, the newest ARC-Message-Signature valid, every
  ARC-Seal valid, ``cv=none`` on the first seal and ``cv=pass`` on the
  others; the result is ``pass`` or ``fail`` (a seal saying ``cv=fail``
  ends the chain: ``fail``).
- Keys are fetched first through the daemon's resolver (``s._domainkey.d``
  TXT of each seal and message signature, each name once), as for DKIM
  (relate.mailauth.dkim); dkimpy then verifies, reading only those keys.
  A key DNS did not give makes the chain ``fail`` marked *unsure* (the
  caller may defer rather than act on it).
- Bounds: more than :data:`MAX_SETS` sets (RFC 8617 §4.2.1 and §5.2 allow 50; no
  real path has more than a handful, and each set hashes the whole body
  once more) is ``fail`` without any lookup or hashing.
- The Authentication-Results entry (with the ptypes IANA registers for RFC 8617): ``arc=pass``
  with ``header.oldest-pass`` (the oldest instance whose
  ARC-Message-Signature still validates, 0 when all do) and
  ``smtp.remote-ip``; a comment names the newest instance and its sealer.
- Trust (what ``smtp.mailauth.arc_trusted_sealers`` unlocks, see
  :func:`vouched`): a chain that passes tells us, authentically, what each
  sealer saw. Starting at the newest set and going down while the sealer
  (``d=`` of the ARC-Seal) is trusted, if one of their
  ARC-Authentication-Results says ``dmarc=pass``, the message passed DMARC
  before a trusted intermediary changed it. Sealers and their results are
  taken as dkimpy validated them, not from our own first reading of the
  fields (which only finds the keys to fetch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import dkim
import dkim.util

from relate.mailauth import authres
from relate.mailauth.dkim import MIN_RSA_BITS, dkimpy_log, field_values
from relate.mailauth.dns import Dns, TempError, each

MAX_SETS = 10

_ANY = re.compile(rb"^arc-", re.IGNORECASE | re.MULTILINE)  # one C pass: most mail has no ARC field at all
_SEAL = re.compile(rb"^arc-seal[ \t]*:", re.IGNORECASE)
_SIGNATURE = re.compile(rb"^arc-message-signature[ \t]*:", re.IGNORECASE)
_RESULTS = re.compile(rb"^arc-authentication-results[ \t]*:", re.IGNORECASE)
_INSTANCE = re.compile(rb"^\s*i\s*=\s*(\d{1,6})\s*;", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_])?\Z")


@dataclass(frozen=True)
class Chain:
    """The ARC sets of a header section, read just enough to fetch their keys and judge their sealers."""

    instances: int  # the highest i= found (the number of sets, when the chain is whole)
    keys: tuple[tuple[str, str], ...]  # (selector, domain) of every seal and message signature, each once
    sealers: dict[int, str]  # i= of each ARC-Seal: its d=, lower case (for the log and header; trust: ArcResult)
    problem: str = ""  # why it fails without verification (too many sets)


@dataclass(frozen=True)
class ArcResult:
    result: str  # none, pass, fail
    instances: int = 0
    sealer: str = ""  # d= of the newest ARC-Seal
    oldest_pass: int | None = None  # header.oldest-pass (pass only)
    reason: str = ""
    unsure: bool = False  # failed because DNS did not answer for a key
    # pass only: each set dkimpy validated, newest first: (instance, the ARC-Seal's d=, what its
    # ARC-Authentication-Results says after "i=N;"), as dkimpy read them (not our own reading of the fields)
    validated: tuple[tuple[int, str, str], ...] = ()


NONE = ArcResult("none")


def _tags(value: bytes) -> dict[bytes, bytes]:
    try:
        tags: dict[bytes, bytes] = dkim.util.parse_tag_value(value)
    except dkim.util.InvalidTagValueList:
        return {}
    return tags


def _instance(tags: dict[bytes, bytes]) -> int:
    try:
        return int(tags.get(b"i", b"0").strip())
    except ValueError:
        return 0


def find_chain(section: bytes) -> Chain | None:
    """The ARC sets of a header section; None when it has no ARC field at all."""
    if b"arc-" not in section.lower() or _ANY.search(section) is None:  # (the substring test: one C pass)
        return None
    seals = field_values(section, _SEAL)
    signatures = field_values(section, _SIGNATURE)
    results = field_values(section, _RESULTS)
    if not (seals or signatures or results):
        return None
    most = max(len(seals), len(signatures), len(results))
    if most > MAX_SETS:
        return Chain(most, (), {}, f"more than {MAX_SETS} ARC sets: not verified")
    keys: dict[tuple[str, str], None] = {}
    sealers: dict[int, str] = {}
    instances = 0
    for kind, values in ((b"as", seals), (b"ams", signatures)):
        for value in values:
            tags = _tags(value)
            selector = tags.get(b"s", b"").decode("ascii", "replace").strip()
            domain = tags.get(b"d", b"").decode("ascii", "replace").strip().lower()
            instance = _instance(tags)
            instances = max(instances, instance)
            if _NAME.match(selector) and _NAME.match(domain):
                keys[(selector, domain)] = None
                if kind == b"as":
                    sealers.setdefault(instance, domain)
    for value in results:
        found = _INSTANCE.match(value)
        if found is not None:
            instances = max(instances, int(found.group(1)))
    if instances > MAX_SETS:
        return Chain(instances, (), sealers, f"ARC instance {instances} over {MAX_SETS}: not verified")
    return Chain(instances, tuple(keys), sealers)


def _key_name(selector: str, domain: str) -> bytes:
    return f"{selector}._domainkey.{domain}.".lower().encode()


async def fetch_keys(dns: Dns, chain: Chain | None) -> dict[bytes, str | TempError | None]:
    """Each key the chain names (by the DNS name dkimpy asks for): its record, None without one, or TempError."""
    if chain is None or chain.problem:
        return {}

    async def one(selector: str, domain: str) -> str | TempError | None:
        try:
            records = await dns.txt(f"{selector}._domainkey.{domain}")
        except TempError as exc:
            return exc
        keys = [r for r in records or () if "p=" in r]
        return keys[0] if keys else None

    answers = await each([one(s, d) for s, d in chain.keys])
    return {_key_name(s, d): a for (s, d), a in zip(chain.keys, answers, strict=True)}


def verify(message: bytes, chain: Chain, keys: dict[bytes, str | TempError | None]) -> ArcResult:
    """Validate the chain (RFC 8617 §5.2) with the keys fetched (CPU: a worker thread for large mail)."""
    newest = chain.sealers.get(chain.instances, "")
    if chain.problem:
        return ArcResult("fail", chain.instances, newest, reason=chain.problem)
    unsure: list[str] = []

    def lookup(name: bytes, timeout: float = 5) -> bytes:
        key = keys.get(name.lower())
        if isinstance(key, TempError):
            unsure.append(str(key))
            return b""
        return (key or "").encode("utf-8", "replace")

    try:
        cv, sets, reason = dkim.ARC(message, logger=dkimpy_log, minkey=MIN_RSA_BITS).verify(dnsfunc=lookup)
    except (dkim.DKIMException, ValueError, IndexError, TypeError, KeyError) as exc:  # on input it did not expect
        cv, sets, reason = dkim.CV_Fail, [], f"{type(exc).__name__}: {exc}"
    if cv == dkim.CV_Pass:
        oldest = chain.instances
        for found in sets:  # newest first: walk down while the message signatures still validate
            if not found.get("ams-valid"):
                break
            oldest = found["instance"]
        validated = tuple(_validated(found) for found in sets)
        return ArcResult("pass", chain.instances, newest, 0 if oldest == 1 else oldest, validated=validated)
    if cv == dkim.CV_None:  # no set dkimpy could read (every field without a usable i=)
        reason = "ARC fields without a usable instance"
    reason = f"DNS did not answer: {unsure[0]}" if unsure else str(reason)[:200]
    return ArcResult("fail", chain.instances, newest, reason=reason, unsure=bool(unsure))


def _validated(found: dict[str, Any]) -> tuple[int, str, str]:
    """(instance, sealer, results) of one set as dkimpy's verify reports it."""
    results = bytes(found.get("aar-value", b""))
    prefix = _INSTANCE.match(results)
    text = results[prefix.end() :] if prefix is not None else b""
    sealer = bytes(found.get("as-domain", b"")).decode("ascii", "replace").strip().lower()
    return int(found["instance"]), sealer, text.decode("utf-8", "replace")


def entry(result: ArcResult, client: str) -> authres.Entry:
    """The ``arc=`` entry of our Authentication-Results field."""
    if result.result == "none":
        return authres.Entry("arc", "none")
    properties = {"smtp.remote-ip": client} if client else {}
    if result.oldest_pass is not None:
        properties = {"header.oldest-pass": str(result.oldest_pass)} | properties
    comment = f"i={result.instances} as.d={result.sealer}" if result.sealer else f"i={result.instances}"
    reason = result.reason if result.result == "fail" else ""
    return authres.Entry("arc", result.result, reason, properties, comment)


def trusted(sealer: str, sealers: list[str]) -> bool:
    """Whether ``sealer`` (an ARC-Seal's d=) is one of ``sealers`` (smtp.mailauth.arc_trusted_sealers)."""
    return bool(sealer) and sealer in {t.strip().lower().rstrip(".") for t in sealers}


def vouched(result: ArcResult, sealers: list[str]) -> str:
    """The trusted sealer who saw the message pass DMARC (see the module docstring), or ""."""
    if result.result != "pass" or not sealers:
        return ""
    for _, sealer, results in result.validated:  # newest first
        if not trusted(sealer, sealers):
            return ""
        _, entries = authres.parse(results)
        if any(e.method == "dmarc" and e.result == "pass" for e in entries):
            return sealer
    return ""
