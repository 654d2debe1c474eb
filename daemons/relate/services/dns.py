"""DKIM keys and the DNS records a hosted domain should publish."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg

from relate.config import Config
from relate.errors import Invalid, NotFound
from relate.mail import dkim
from relate.mail.address import normalize_domain
from relate.mailauth.dns import Dns, TempError
from relate.store import accounts
from relate.store import dkim as dkim_store


async def _domain(pool: asyncpg.Pool, name: str) -> dict[str, Any]:
    domain = await accounts.get_domain(pool, normalize_domain(name))
    if domain is None:
        raise NotFound(f"domain {name} is not hosted here")
    return domain


# A pending key's record is looked up at most this often (the delivery daemon's background work).
DKIM_CHECK_SECONDS = 600.0


async def dkim_keygen(
    pool: asyncpg.Pool, name: str, *, kind: str = "rsa", selector: str | None = None
) -> tuple[dkim.DkimKey, str]:
    """Make a new key for the domain: (the key, its state). It signs at once when the domain has no key;
    else it is *pending*: the current key keeps signing until this one's record is seen in DNS
    (:func:`promote_published`). A selector in use is never replaced: the default one (``relateYYYYMMDD``)
    takes the next free letter, an explicit one is refused."""
    if kind not in dkim.ALGORITHMS:
        raise Invalid(f"unknown DKIM key type {kind!r}: rsa or ed25519")
    domain = await _domain(pool, name)
    taken = await dkim_store.selectors(pool, domain["id"])
    if selector is not None and selector in taken:
        raise Invalid(f"selector {selector!r} is in use for {domain['name']}: pick another (see `relatectl dkim list`)")
    if selector is None:
        base = f"relate{datetime.now(UTC):%Y%m%d}"
        selector = next(s for s in (base, *(base + c for c in "bcdefghijklmnopqrstuvwxyz")) if s not in taken)
    key = await asyncio.to_thread(dkim.generate, selector, kind)
    async with pool.acquire() as conn:
        state = await dkim_store.add(conn, domain["id"], key.selector, key.algorithm, key.private_key, key.public_key)
    return key, state


def published(values: list[str] | None, public_key: str) -> bool:
    """Whether a DKIM key record among ``values`` (TXT strings joined) carries ``public_key`` as its p=."""
    for value in values or []:
        tags = dict(tag.split("=", 1) for tag in value.split(";") if "=" in tag)
        found = {k.strip(): "".join(v.split()) for k, v in tags.items()}
        if found.get("p") == public_key:
            return True
    return False


async def promote_published(pool: asyncpg.Pool, dns: Dns, *, every: float = DKIM_CHECK_SECONDS) -> list[str]:
    """Look up each pending key's record (at most once per ``every`` seconds); a key whose record is
    published starts signing. The ``selector._domainkey.domain`` names activated."""
    done = []
    for key in await dkim_store.due_checks(pool, every):
        name = f"{key['selector']}._domainkey.{key['domain']}"
        try:
            values = await dns.txt(name)
        except TempError:
            continue  # asked again next time
        async with pool.acquire() as conn:
            await dkim_store.checked(conn, key["id"])
            if published(values, key["public_key"]):
                await dkim_store.activate(conn, key["domain"], key["selector"])
                done.append(name)
    return done


async def dkim_activate(pool: asyncpg.Pool, dns: Dns, name: str, selector: str, *, force: bool = False) -> str:
    """Make a key sign now; unless ``force``, only once its record is seen in DNS. Its former state."""
    domain = (await _domain(pool, name))["name"]
    keys = {k["selector"]: k for k in await dkim_store.listing(pool, domain)}
    if selector not in keys:
        raise NotFound(f"no DKIM key {selector!r} for {domain} (see `relatectl dkim list`)")
    if not force:
        record = f"{selector}._domainkey.{domain}"
        try:
            values = await dns.txt(record)
        except TempError as exc:
            raise Invalid(f"cannot look up {record} now ({exc}); try again, or --force") from None
        if not published(values, keys[selector]["public_key"]):
            raise Invalid(f"{record} does not publish this key yet: publish it first, or --force")
    async with pool.acquire() as conn:
        state = await dkim_store.activate(conn, domain, selector)
    assert state is not None
    return state


async def dkim_retire(pool: asyncpg.Pool, name: str, selector: str) -> None:
    """Delete a key that does not sign (pending or previous); the signing key is refused."""
    domain = (await _domain(pool, name))["name"]
    state = await dkim_store.retire(pool, domain, selector)
    if state is None:
        raise NotFound(f"no DKIM key {selector!r} for {domain} (see `relatectl dkim list`)")
    if state == "active":
        raise Invalid(f"{selector!r} signs {domain}'s mail: make another key and let it take over first")


async def dkim_keys(pool: asyncpg.Pool, name: str | None = None) -> list[dict[str, Any]]:
    """Every DKIM key (without its private part), with its state, by domain."""
    domain = (await _domain(pool, name))["name"] if name else None
    return await dkim_store.listing(pool, domain)


_DKIM_WHY = {
    "active": "DKIM: the key that signs",
    "pending": "DKIM: a new key, which signs once this is seen in DNS",
    "previous": "DKIM: the key before; keep it until `relatectl dkim retire`",
}


def txt_strings(value: str) -> str:
    """A TXT value as quoted strings of at most 255 characters (RFC 1035 §3.3.14)."""
    return " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))


async def records(pool: asyncpg.Pool, cfg: Config, name: str) -> list[dict[str, str]]:
    """MX, SPF, DKIM, DMARC, client autoconfiguration and RFC 6186 SRV records, ready to paste."""
    domain = (await _domain(pool, name))["name"]
    host = cfg.hostname.rstrip(".") + "."
    out = [
        {"name": f"{domain}.", "type": "MX", "value": f"10 {host}", "why": "mail for the domain comes here"},
        {"name": f"{domain}.", "type": "TXT", "value": txt_strings("v=spf1 mx -all"), "why": "SPF: only the MX sends"},
    ]
    keys = await dkim_store.listing(pool, domain)
    for key in keys:
        kind = "rsa" if key["algorithm"] == "rsa-sha256" else "ed25519"
        out.append(
            {
                "name": f"{key['selector']}._domainkey.{domain}.",
                "type": "TXT",
                "value": txt_strings(f"v=DKIM1; k={kind}; p={key['public_key']}"),
                "why": _DKIM_WHY[key["state"]],
            }
        )
    if not keys:
        out.append(
            {
                "name": f"SELECTOR._domainkey.{domain}.",
                "type": "TXT",
                "value": "(none yet)",
                "why": f"DKIM: run `relatectl dkim keygen {domain}` first",
            }
        )
    out += [
        {
            "name": f"_dmarc.{domain}.",
            "type": "TXT",
            "value": txt_strings(f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"),
            "why": "DMARC",
        },
        {"name": f"autoconfig.{domain}.", "type": "CNAME", "value": host, "why": "Thunderbird autoconfiguration"},
        {"name": f"_submissions._tcp.{domain}.", "type": "SRV", "value": f"0 1 465 {host}", "why": "RFC 8314"},
        {"name": f"_submission._tcp.{domain}.", "type": "SRV", "value": f"0 1 587 {host}", "why": "RFC 6186"},
        {"name": f"_imaps._tcp.{domain}.", "type": "SRV", "value": f"0 1 993 {host}", "why": "RFC 6186"},
        {"name": f"_pop3s._tcp.{domain}.", "type": "SRV", "value": f"0 1 995 {host}", "why": "RFC 6186"},
    ]
    return out
