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
from relate.store import accounts
from relate.store import dkim as dkim_store


async def _domain(pool: asyncpg.Pool, name: str) -> dict[str, Any]:
    domain = await accounts.get_domain(pool, normalize_domain(name))
    if domain is None:
        raise NotFound(f"domain {name} is not hosted here")
    return domain


async def dkim_keygen(pool: asyncpg.Pool, name: str, *, kind: str = "rsa", selector: str | None = None) -> dkim.DkimKey:
    """Make a new key for the domain and make it the one outbound mail is signed with."""
    if kind not in dkim.ALGORITHMS:
        raise Invalid(f"unknown DKIM key type {kind!r}: rsa or ed25519")
    domain = await _domain(pool, name)
    selector = selector or f"relate{datetime.now(UTC):%Y%m}"
    key = await asyncio.to_thread(dkim.generate, selector, kind)
    async with pool.acquire() as conn:
        await dkim_store.replace(conn, domain["id"], key.selector, key.algorithm, key.private_key, key.public_key)
    return key


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
    key = await dkim_store.active(pool, domain)
    if key is not None:
        record = dkim.DkimKey(**{k: key[k] for k in dkim.KEY_FIELDS}).txt_record()
        out.append(
            {
                "name": f"{key['selector']}._domainkey.{domain}.",
                "type": "TXT",
                "value": txt_strings(record),
                "why": "DKIM",
            }
        )
    else:
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
