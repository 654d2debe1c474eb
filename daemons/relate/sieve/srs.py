"""Sender Rewriting Scheme (SRS0, the de-facto scheme of libsrs2 and postsrsd) for redirected mail.

``SRS0=HHHH=TT=domain=local@our-domain``: ``TT`` the day (days since the
epoch, modulo 1024, two base32 characters), ``HHHH`` the first four base64
characters of HMAC-SHA1 over ``TT``, ``domain`` and ``local`` (lower-cased)
with a secret kept in the database (``srs_secret``, migration 0050, made on
first use). A redirect's envelope sender is rewritten so SPF at the receiver
checks our domain; a null sender stays null. :func:`reverse` checks the hash
(case-insensitively, as receivers may change case) and the age (at most
``MAX_AGE_DAYS``) and gives the original sender back, or None. SRS1 (a
second forwarder) is not made: an SRS0 address of someone else is rewritten
as any other sender.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time

import asyncpg

MAX_AGE_DAYS = 21
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_PERIOD = 1024  # days: the timestamp wraps


def _today(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // 86400) % _PERIOD


def _stamp(day: int) -> str:
    return _B32[day >> 5] + _B32[day & 31]


def _hash(secret: bytes, stamp: str, domain: str, local: str) -> str:
    data = (stamp + domain + local).lower().encode("utf-8", "surrogateescape")
    return base64.b64encode(hmac.new(secret, data, hashlib.sha1).digest()).decode()[:4]


def forward(sender: str, our_domain: str, secret: bytes, now: float | None = None) -> str:
    """The SRS0 envelope sender for ``sender`` at ``our_domain``; '' stays ''."""
    if not sender or "@" not in sender:
        return sender
    local, _, domain = sender.rpartition("@")
    stamp = _stamp(_today(now))
    return f"SRS0={_hash(secret, stamp, domain, local)}={stamp}={domain}={local}@{our_domain}"


def reverse(address: str, secret: bytes, now: float | None = None) -> str | None:
    """The original sender of an SRS0 ``address`` whose hash and age check out, else None."""
    local = address.rpartition("@")[0]
    if local[:4].upper() != "SRS0" or local[4:5] not in ("=", "+", "-"):
        return None
    parts = local[5:].split("=", 3)
    if len(parts) != 4:
        return None
    given, stamp, domain, orig_local = parts
    if len(stamp) != 2 or not domain or not orig_local or len(given) != 4:
        return None
    try:
        day = (_B32.index(stamp[0].upper()) << 5) | _B32.index(stamp[1].upper())
    except ValueError:
        return None
    if (_today(now) - day) % _PERIOD > MAX_AGE_DAYS:
        return None
    if not hmac.compare_digest(given.lower(), _hash(secret, stamp.upper(), domain, orig_local).lower()):
        return None
    return f"{orig_local}@{domain}"


async def secret(conn: asyncpg.Connection | asyncpg.Pool) -> bytes:
    """The database's SRS secret (made once, 32 random bytes)."""
    await conn.execute("INSERT INTO srs_secret (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING", os.urandom(32))
    return bytes(await conn.fetchval("SELECT secret FROM srs_secret WHERE id = 1"))
