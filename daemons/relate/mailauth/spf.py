"""SPF (RFC 7208): ``check_host()`` over the daemon's asyncio resolver, with every limit of §4.6.4.

Policy:

- A record is parsed whole before any of it is evaluated; a syntax error
  anywhere (an unknown mechanism, a bad CIDR length, a second ``redirect``,
  a ``%`` that starts no macro) is ``permerror`` (§4.6). Unknown modifiers
  are ignored (§6).
- Limits (§4.6.4): at most 10 terms that cause DNS queries (``include``,
  ``a``, ``mx``, ``ptr``, ``exists``, ``redirect``) across the whole
  evaluation, includes and redirects included; at most 2 void lookups
  (NXDOMAIN or no records) by those terms; at most 10 MX names for one
  ``mx`` (more is ``permerror``); at most 10 PTR names for ``ptr`` (the
  rest ignored); all in at most 20 seconds (then ``temperror``). Past a
  limit the result is ``permerror``.
- DNS trouble (timeout, SERVFAIL) is ``temperror`` (§2.6.6), except inside
  ``ptr``, which then does not match (§5.5). The lookup of an SPF record
  itself is not a void lookup.
- Macros (§7): every letter but ``p`` as written; ``%{p}`` expands to
  ``unknown`` (§7.3 allows it; the lookups it needs are not worth their
  cost). Explanations (``exp=``) are parsed but never fetched: the answer
  we give a sender does not quote them.
- An IPv4-mapped IPv6 client is checked as its IPv4 address.
- A result is given again without evaluating the record while every DNS
  answer it was made of is still in the cache unchanged (relate.mailauth.dns,
  ``Dns.derived``); a ``temperror`` is always evaluated anew.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

from relate.mailauth.dns import Dns, TempError

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
MAX_LOOKUPS = 10
MAX_VOID_LOOKUPS = 2
MAX_MX_NAMES = 10
MAX_PTR_NAMES = 10
TIME_LIMIT = 20.0

_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.\-]*)=(.*)\Z", re.DOTALL)
_MACRO = re.compile(r"%(?:\{([A-Za-z])([0-9]*)(r?)([.\-+,/_=]*)\}|(.))", re.IGNORECASE | re.DOTALL)
_DUAL_CIDR = re.compile(r"(?:/([0-9]{1,2}))?(?://([0-9]{1,3}))?\Z")
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_\-]{0,61}[A-Za-z0-9_])?\Z")

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class PermError(Exception):
    """The record cannot be evaluated: its syntax, or a limit of §4.6.4."""


@dataclass(frozen=True)
class SpfResult:
    result: str  # one of RESULTS
    identity: str  # "mailfrom" or "helo" (RFC 7208 §2.3, §2.4)
    domain: str  # the domain checked ("" when there was none)
    sender: str  # the identity as checked: the MAIL FROM address, or postmaster@HELO
    reason: str = ""  # for the log and the header's comment


@dataclass(frozen=True)
class _Term:
    qualifier: str  # pass, fail, softfail, neutral
    name: str  # mechanism name, lower case
    arg: str  # domain-spec, address or "" (as written, macros unexpanded)
    cidr4: int | None = None
    cidr6: int | None = None


@dataclass(frozen=True)
class _Record:
    terms: tuple[_Term, ...]
    redirect: str | None


@functools.lru_cache(maxsize=4096)
@functools.lru_cache(maxsize=4096)
def valid_domain(domain: str) -> bool:
    """A multi-label domain name with no empty or over-long label (§4.3)."""
    name = domain[:-1] if domain.endswith(".") else domain
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    return len(labels) > 1 and all(_LABEL.match(label) for label in labels)


def _check_macro_string(text: str, *, exp: bool = False) -> None:
    """Raise PermError when ``text`` is not a macro-string (§7.1); letters c, r, t only in explanations."""
    pos = 0
    while True:
        found = text.find("%", pos)
        if found < 0:
            return
        m = _MACRO.match(text, found)
        if m is None:
            raise PermError(f"bad macro in {text!r}")
        if m.group(5) is not None:
            if m.group(5) not in "%_-":
                raise PermError(f"bad macro in {text!r}")
        elif m.group(1).lower() not in ("slodiphv" + ("crt" if exp else "")):
            raise PermError(f"unknown macro letter in {text!r}")
        pos = m.end()


@functools.lru_cache(maxsize=1024)
def parse_record(text: str) -> _Record:
    """The terms of one ``v=spf1`` record (§4.6.1, §12), or PermError (kept per record text: records repeat)."""
    words = text.split(" ")
    terms: list[_Term] = []
    modifiers: dict[str, str] = {}
    for word in words[1:]:
        if not word:
            continue
        mod = _MODIFIER.match(word)
        if mod is not None:
            name = mod.group(1).lower()
            if name in modifiers and name in ("redirect", "exp"):
                raise PermError(f"{name}= given twice")
            _check_macro_string(mod.group(2))
            if name in ("redirect", "exp") and not mod.group(2):
                raise PermError(f"{name}= without a domain")
            modifiers[name] = mod.group(2)
            continue
        qualifier = _QUALIFIERS.get(word[0])
        if qualifier is not None:
            word = word[1:]
        terms.append(_parse_mechanism(word, qualifier or "pass"))
    return _Record(tuple(terms), modifiers.get("redirect"))


def _parse_mechanism(word: str, qualifier: str) -> _Term:
    cut = len(word)
    for sep in (":", "/"):
        found = word.find(sep)
        if found >= 0:
            cut = min(cut, found)
    name, rest = word[:cut].lower(), word[cut:]
    if name not in _MECHANISMS:
        raise PermError(f"unknown mechanism {name!r}")
    if name == "all":
        if rest:
            raise PermError("all takes no argument")
        return _Term(qualifier, name, "")
    if name in ("ip4", "ip6"):
        if not rest.startswith(":"):
            raise PermError(f"{name} needs an address")
        address, _, length = rest[1:].partition("/")
        bits = 32 if name == "ip4" else 128
        try:
            ip = ipaddress.IPv4Address(address) if name == "ip4" else ipaddress.IPv6Address(address)
        except ValueError:
            raise PermError(f"bad {name} address {address!r}") from None
        cidr = bits
        if length:
            if not length.isdigit() or int(length) > bits or (len(length) > 1 and length[0] == "0"):
                raise PermError(f"bad {name} prefix length {length!r}")
            cidr = int(length)
        return _Term(qualifier, name, str(ip), cidr, cidr)
    spec, cidr4, cidr6 = "", None, None
    if rest.startswith(":"):
        slash = rest.find("/")
        spec, rest = (rest[1:], "") if slash < 0 else (rest[1:slash], rest[slash:])
        if not spec:
            raise PermError(f"{name}: empty domain")
        _check_macro_string(spec)
    if name in ("include", "exists") and not spec:
        raise PermError(f"{name} needs a domain")
    if rest:
        if name not in ("a", "mx"):
            raise PermError(f"{name} takes no prefix length")
        m = _DUAL_CIDR.match(rest)
        if m is None or not rest:
            raise PermError(f"bad prefix length {rest!r}")
        if m.group(1) is not None:
            cidr4 = int(m.group(1))
            if cidr4 > 32:
                raise PermError(f"bad prefix length {rest!r}")
        if m.group(2) is not None:
            cidr6 = int(m.group(2))
            if cidr6 > 128:
                raise PermError(f"bad prefix length {rest!r}")
    return _Term(qualifier, name, spec, cidr4, cidr6)


class _Evaluation:
    """One check_host() and everything it recurses into: the shared lookup counts live here."""

    def __init__(self, dns: Dns, ip: IP, sender: str, helo: str) -> None:
        self.dns = dns
        self.ip = ip
        self.sender = sender
        self.helo = helo
        self.lookups = 0
        self.voids = 0

    # -- limits ---------------------------------------------------------------------------

    def _count(self) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise PermError(f"more than {MAX_LOOKUPS} DNS-querying terms")

    def _void(self, answer: list[str] | None) -> list[str]:
        if not answer:
            self.voids += 1
            if self.voids > MAX_VOID_LOOKUPS:
                raise PermError(f"more than {MAX_VOID_LOOKUPS} void lookups")
            return []
        return answer

    # -- macros (§7) ------------------------------------------------------------------------

    def expand(self, text: str, domain: str) -> str:
        out: list[str] = []
        pos = 0
        while True:
            found = text.find("%", pos)
            if found < 0:
                out.append(text[pos:])
                break
            out.append(text[pos:found])
            m = _MACRO.match(text, found)
            if m is None:
                raise PermError(f"bad macro in {text!r}")
            pos = m.end()
            if m.group(5) is not None:
                out.append({"%": "%", "_": " ", "-": "%20"}[m.group(5)])
                continue
            letter, digits, reverse, delimiters = m.group(1), m.group(2), m.group(3), m.group(4)
            value = self._letter(letter.lower(), domain)
            parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
            if reverse:
                parts.reverse()
            if digits:
                keep = int(digits)
                if keep == 0:
                    raise PermError("macro keeps zero labels")
                parts = parts[-keep:]
            value = ".".join(parts)
            if letter.isupper():
                value = urllib.parse.quote(value, safe="")
            out.append(value)
        return "".join(out)

    def _letter(self, letter: str, domain: str) -> str:
        local, _, sender_domain = self.sender.rpartition("@")
        if letter == "s":
            return self.sender
        if letter == "l":
            return local or "postmaster"
        if letter == "o":
            return sender_domain
        if letter == "d":
            return domain
        if letter == "i":
            if self.ip.version == 4:
                return str(self.ip)
            return ".".join(self.ip.exploded.replace(":", ""))
        if letter == "p":
            return "unknown"
        if letter == "v":
            return "in-addr" if self.ip.version == 4 else "ip6"
        if letter == "h":
            return self.helo
        raise PermError(f"macro letter {letter!r} outside an explanation")

    def target(self, spec: str, domain: str) -> str:
        """The domain a term names (its domain-spec expanded, or the current domain), cut to 253 octets."""
        if not spec:
            return domain
        name = self.expand(spec, domain).rstrip(".")
        while len(name) > 253 and "." in name:
            name = name.split(".", 1)[1]
        return name

    # -- check_host() (§4) ------------------------------------------------------------------

    async def check_host(self, domain: str) -> str:
        if not valid_domain(domain):
            return "none"
        records = await self.dns.txt(domain)
        spf = [r for r in records or () if r.lower() == "v=spf1" or r[:7].lower() == "v=spf1 "]
        if not spf:
            return "none"
        if len(spf) > 1:
            raise PermError(f"{len(spf)} SPF records at {domain}")
        record = parse_record(spf[0])
        for term in record.terms:
            if await self._matches(term, domain):
                return term.qualifier
        if record.redirect is not None:
            self._count()
            target = self.target(record.redirect, domain)
            if not valid_domain(target):
                raise PermError(f"redirect to {target!r}")
            result = await self.check_host(target)
            if result == "none":
                raise PermError(f"redirect to {target} without SPF record")
            return result
        return "neutral"

    async def _matches(self, term: _Term, domain: str) -> bool:
        name = term.name
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            if (name == "ip4") != (self.ip.version == 4):
                return False
            return self.ip in _network(f"{term.arg}/{term.cidr4}")
        self._count()
        target = self.target(term.arg, domain)
        if name == "include":
            result = await self.check_host(target)
            if result in ("pass",):
                return True
            if result in ("fail", "softfail", "neutral"):
                return False
            raise PermError(f"include:{target} gave {result}")
        if name == "exists":
            return bool(self._void(await self.dns.addresses(target, "A")))
        if name == "a":
            return self._in(self._void(await self.dns.addresses(target, self._rdtype())), term)
        if name == "mx":
            names = [n for n in self._void(await self.dns.mx(target)) if n not in ("", ".")]
            if len(names) > MAX_MX_NAMES:
                raise PermError(f"{target} has more than {MAX_MX_NAMES} MX records")
            for host in names:
                if self._in(await self.dns.addresses(host, self._rdtype()) or [], term):
                    return True
            return False
        assert name == "ptr"
        return await self._ptr(target)

    def _rdtype(self) -> str:
        return "A" if self.ip.version == 4 else "AAAA"

    def _in(self, addresses: list[str], term: _Term) -> bool:
        bits = term.cidr4 if self.ip.version == 4 else term.cidr6
        for address in addresses:
            try:
                network = _network(address if bits is None else f"{address}/{bits}")
            except ValueError:
                continue
            if self.ip in network:
                return True
        return False

    async def _ptr(self, target: str) -> bool:
        """§5.5: a validated name of the client at or under ``target``; DNS trouble is no match."""
        try:
            names = self._void(await self.dns.ptr(self.ip.reverse_pointer))
            for name in names[:MAX_PTR_NAMES]:
                lowered = name.lower().rstrip(".")
                if lowered != target.lower() and not lowered.endswith("." + target.lower()):
                    continue
                if str(self.ip) in (await self.dns.addresses(name, self._rdtype()) or []):
                    return True
        except TempError:
            return False
        return False


@functools.lru_cache(maxsize=4096)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or network of a record or an answer (kept per text: the same come back with every message,
    and ipaddress parses in Python); raises ValueError."""
    return ipaddress.ip_network(text, strict=False)


@functools.lru_cache(maxsize=4096)
def client_ip(address: str) -> IP | None:
    """The client's address as SPF sees it (an IPv4-mapped IPv6 address as IPv4), or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


async def check_host(dns: Dns, ip: IP, domain: str, sender: str, helo: str) -> tuple[str, str]:
    """check_host(ip, domain, sender) of §4: (result, reason)."""
    evaluation = _Evaluation(dns, ip, sender, helo)
    try:
        async with asyncio.timeout(TIME_LIMIT):
            return await evaluation.check_host(domain.rstrip(".").lower()), ""
    except PermError as exc:
        return "permerror", str(exc)
    except TempError as exc:
        return "temperror", str(exc)
    except TimeoutError:
        return "temperror", f"no answer within {TIME_LIMIT:g} s"


async def check_mail_from(dns: Dns, client: str, mail_from: str, helo: str) -> SpfResult:
    """The MAIL FROM identity (§2.4); with the null reverse-path, postmaster@HELO (§2.4, §4.3)."""
    if not mail_from:
        result = await check_helo(dns, client, helo)
        return SpfResult(result.result, "mailfrom", result.domain, result.sender, result.reason)
    local, _, domain = mail_from.rpartition("@")
    sender = f"{local or 'postmaster'}@{domain}"
    return await _check(dns, client, domain, sender, helo, "mailfrom")


async def check_helo(dns: Dns, client: str, helo: str) -> SpfResult:
    """The HELO identity (§2.3): none when the HELO name is not a domain (an address literal)."""
    return await _check(dns, client, helo, f"postmaster@{helo}", helo, "helo")


async def _check(dns: Dns, client: str, domain: str, sender: str, helo: str, identity: str) -> SpfResult:
    ip = client_ip(client)
    if ip is None:
        return SpfResult("none", identity, domain, sender, "no client address")
    if not valid_domain(domain):
        return SpfResult("none", identity, domain, sender, "not a domain")
    # Kept while the answers it used are (relate.mailauth.dns): the key names every input of check_host().
    result, reason = await dns.derived(
        ("spf", client, domain, sender, helo),
        lambda: check_host(dns, ip, domain, sender, helo),
        keep=lambda found: found[0] != "temperror",
    )
    return SpfResult(result, identity, domain.rstrip(".").lower(), sender, reason)
