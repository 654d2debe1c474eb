"""API keys and the one authenticator every protocol uses.

Key format: ``relate_<prefix>_<secret>``: 12 hex characters of lookup prefix
and 32 URL-safe characters (192 bits) of secret. The database keeps the
prefix and a bcrypt hash of the whole key, never the key.

Policy:

- ``authenticate(login, key, scope)`` succeeds only when the key exists, is
  neither revoked nor expired, belongs to the user that ``login`` names (the
  primary address or any alias), the user is enabled, and the key carries
  ``scope`` (``app`` implies ``api:read`` and ``api:write``). Every refusal
  looks the same to the client. A bearer key (the REST API) names no login:
  ``login=None`` accepts the key for whichever user owns it.
- A successful verification is cached in memory for ``auth.cache_seconds``
  (30 s), keyed by a SHA-256 of login and key, so a revoked key stops working
  everywhere within that window and the key itself is never held.
- Failed logins are counted in PostgreSQL (table ``auth_failures``,
  store/login_failures.py), so every host enforces one budget. The table
  holds windows per key, not a row per failure: one row per (address, login)
  and one per address, each with the times of its recent failures (a sliding
  window, never more times than its cap) and the end of its lockout; the
  failure that reaches a cap empties the times and sets the lockout, so a
  fresh count starts after it. The caps: ``auth.max_failures`` (5) failures
  of one login from one client address within
  ``auth.failure_window_seconds`` (15 min) lock that login out from that
  address, and ``auth.max_failures_per_address`` (50) failures of any logins
  lock the whole address out, each for ``auth.lockout_seconds`` (15 min),
  refused without checking anything and without counting. A login counts
  under the user it names (an alias shares its user's count); a bearer key's
  login is its prefix when well-formed, else ``-``. So one user's wrong keys
  lock out neither another user nor another address, and behind a NAT or a
  proxy (see api.trusted_proxies) a guesser reaches the address cap, not
  every account. A success clears its (address, login) count, not the
  address's.
- The cost: a cached verification never asks the database, locked out or not
  (the cache holds only keys that verified, so it serves no guessing),
  except once to clear a count this process saw fail. An uncached login asks
  once more than it would anyway (the lockout state, read before bcrypt),
  plus once to clear a count only when there is one. A failure costs one
  statement, which also deletes a few expired counts of other addresses, so
  the table keeps only live ones. A malformed key is refused before any
  lookup; its failure is still counted.
- The database failing while a failure is counted changes nothing for the
  client (it is refused all the same) and is logged as one
  ``auth-count-failed`` line; failing while the lockout or the key is read
  raises asyncpg.PostgresError or ConnectionError (asyncpg's own errors for
  a lost connection become the latter), which every protocol answers as a
  temporary failure.
- Each failure is logged as one line for fail2ban::

      auth-failure service=imap client=192.0.2.7 user="bob@example.com" reason=bad-secret

  ``user`` is JSON-quoted, so whatever a client sends cannot forge a line.
  A lockout adds ``auth-lockout client=... user="..." seconds=...`` (``user=*``
  when the whole address is locked).
- A wrong internal key (daemon-to-API calls) is logged the same way and not
  counted: it is checked against one configured secret, without bcrypt.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg
import bcrypt

from relate.config import AuthConfig
from relate.errors import Invalid, RelateError
from relate.mail.address import comparable_address
from relate.scopes import INTERNAL_SCOPE as INTERNAL_SCOPE  # re-exported: daemons name them as auth.*
from relate.scopes import USER_SCOPES as USER_SCOPES
from relate.store import db
from relate.store import keys as key_store
from relate.store import login_failures as failure_store
from relate.store.db import DatabaseUnavailable

log = logging.getLogger("relate.auth")

T = TypeVar("T")

# The start of the refusal reason for a valid key without the scope asked for.
MISSING_SCOPE = "missing-scope:"
_IMPLIED = {"app": {"api:read", "api:write"}}

KEY_PREFIX = "relate_"
_KEY_RE = re.compile(r"^relate_([0-9a-f]{12})_([A-Za-z0-9_\-]{32})$")
_MAX_TRACKED_CLIENTS = 100_000
# A login longer than any address is counted under its first this many characters.
_MAX_LOGIN = 320
# NUL (PostgreSQL text cannot hold it) and lone surrogates (not UTF-8): a login with them names nobody.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def parse_scopes(text: str | Iterable[str]) -> list[str]:
    """``"imap, smtp"`` -> ``["imap", "smtp"]``; raises Invalid for unknown scopes."""
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes: list[str] = []
    for item in items:
        scope = item.strip().lower()
        if not scope:
            continue
        if scope not in USER_SCOPES:
            raise Invalid(f"unknown scope {scope!r}: choose from {', '.join(USER_SCOPES)}")
        if scope not in scopes:
            scopes.append(scope)
    if not scopes:
        raise Invalid(f"give at least one scope: {', '.join(USER_SCOPES)}")
    return scopes


def new_key(rounds: int) -> tuple[str, str, str]:
    """(key, prefix, bcrypt hash) for a new random key."""
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(24)}"
    hashed = bcrypt.hashpw(key.encode(), bcrypt.gensalt(rounds)).decode()
    return key, prefix, hashed


def _work_factor(hashed: str) -> int | None:
    """The cost of a ``$2b$NN$...`` bcrypt hash."""
    parts = hashed.split("$")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None


def key_prefix(key: str) -> str | None:
    m = _KEY_RE.match(key)
    return m.group(1) if m else None


async def _available(step: Awaitable[T]) -> T:
    """The result of ``step``; the database failing in a way the protocols do not catch becomes ConnectionError.

    Every protocol answers OSError and asyncpg.PostgresError as "temporarily
    unavailable"; asyncpg's client-side errors for a lost connection are neither.
    """
    try:
        return await step
    except (asyncpg.InterfaceError, asyncpg.InternalClientError, DatabaseUnavailable) as exc:
        raise ConnectionError(f"database unavailable: {type(exc).__name__}") from exc


@dataclass(frozen=True)
class Principal:
    """Who a verified key speaks for."""

    user_id: int
    address: str  # the user's primary address
    key_id: int
    scopes: frozenset[str]
    expires_at: datetime | None

    def has(self, scope: str) -> bool:
        return scope in self.scopes or any(scope in _IMPLIED.get(s, ()) for s in self.scopes)


class AuthRefused(RelateError):
    """Authentication failed; ``reason`` is for the log, never the client."""

    def __init__(self, reason: str) -> None:
        super().__init__("authentication failed")
        self.reason = reason


class Authenticator:
    def __init__(
        self,
        pool: asyncpg.Pool,
        cfg: AuthConfig,
        *,
        internal_key: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._cfg = cfg
        self._internal_key = internal_key
        self._clock = clock
        self._cache: dict[bytes, tuple[Principal, float]] = {}
        # (client, login) pairs this process counted a failure for: a cached success clears them.
        self._counted: set[tuple[str, str]] = set()
        # A hash to check against when the prefix is unknown, so that case
        # costs the same time as a wrong secret.
        self._dummy_hash = bcrypt.hashpw(b"relate-dummy", bcrypt.gensalt(cfg.bcrypt_rounds))

    async def authenticate(
        self, login: str | None, key: str, scope: str | None, *, client: str, service: str, use_scope: str | None = None
    ) -> Principal:
        """The principal for (login, key) holding ``scope``, or AuthRefused.

        ``login=None``: a bearer key. ``scope=None``: the caller checks scopes
        itself (the REST API answers a valid key without the scope with 403,
        which is not a failed login; it passes that scope as ``use_scope``, so
        such a refusal records no use either). The database failing while the lockout
        state or the key is read raises asyncpg.PostgresError or OSError (a
        temporary failure for the caller to answer).
        """
        given = login or "-"  # for the log line
        raw_login, login = login, None if login is None else comparable_address(login)  # münchen.de: A-label
        prefix = key_prefix(key)
        # What the database sees of the login: text it can store, and nothing that could name a user by accident.
        named = None if login is None else (login if len(login) <= _MAX_LOGIN and not _UNSTORABLE.search(login) else "")
        counted_as = _UNSTORABLE.sub("\ufffd", login or "-")[:_MAX_LOGIN] if login is not None else (prefix or "-")
        cache_key = hashlib.sha256(
            (b"\1" if login is None else login.encode("utf-8", "surrogateescape") + b"\0")
            + key.encode("utf-8", "surrogateescape")
        ).digest()
        principal = self._cached(cache_key)
        verified, rehash = False, None
        if principal is not None:
            if (client, counted_as) in self._counted:
                await self._clear(client, counted_as)
        elif prefix is None:
            raise await self._fail(service, client, given, counted_as, "malformed-key")
        else:
            lock = await _available(failure_store.state(self._pool, client, counted_as))
            if lock.locked_until is not None:
                raise self._refuse(service, client, given, "locked-out")
            try:
                verified_as, rehash = await _available(self._verify(named, key, prefix))
            except AuthRefused as exc:
                raise await self._fail(service, client, given, counted_as, exc.reason) from None
            principal = verified_as
            self._cache_put(cache_key, verified_as)
            verified = True
            if lock.counted:
                await self._clear(client, counted_as)
        assert principal is not None
        try:
            self._refuse_unusable(principal, scope)
        except AuthRefused as exc:
            raise await self._fail(service, client, raw_login or principal.address, counted_as, exc.reason) from None
        if verified and (use_scope is None or principal.has(use_scope)):
            # A use is recorded only for a login that succeeds: an expired key or a missing scope is no use.
            await _available(key_store.touch(self._pool, principal.key_id, rehash=rehash))
        return principal

    @staticmethod
    def _refuse_unusable(principal: Principal, scope: str | None) -> None:
        """AuthRefused for a verified key that has expired or lacks ``scope``."""
        if principal.expires_at is not None and principal.expires_at <= datetime.now(UTC):
            raise AuthRefused("expired")
        if scope is not None and not principal.has(scope):
            raise AuthRefused(f"{MISSING_SCOPE}{scope}")

    def check_internal(self, key: str, *, client: str) -> bool:
        """Whether ``key`` is the configured internal key (constant time); a wrong one is logged, not counted."""
        expected = (self._internal_key or "").encode()
        ok = bool(expected) and hmac.compare_digest(key.encode("utf-8", "surrogateescape"), expected)
        if not ok:
            self._refuse("internal", client, "-", "bad-internal-key")
        return ok

    def forget(self) -> None:
        """Drop every cached verification (after a revocation in this process)."""
        self._cache.clear()

    def _cached(self, cache_key: bytes) -> Principal | None:
        hit = self._cache.get(cache_key)
        if hit is None:
            return None
        if hit[1] > self._clock():
            return hit[0]
        del self._cache[cache_key]
        return None

    def _cache_put(self, cache_key: bytes, principal: Principal) -> None:
        if len(self._cache) > _MAX_TRACKED_CLIENTS:
            self._cache.clear()
        self._cache[cache_key] = (principal, self._clock() + self._cfg.cache_seconds)

    async def _verify(self, login: str | None, key: str, prefix: str) -> tuple[Principal, tuple[str, str] | None]:
        """The principal of a well-formed key, and the (old, new) hash when the work factor changed; ``login`` is
        None for a bearer key, "" for one that names nobody. Records no use: the caller does, once it accepts."""
        row = await key_store.for_verification(self._pool, prefix, login or "")
        if row is None:
            await asyncio.to_thread(bcrypt.checkpw, key.encode(), self._dummy_hash)
            raise AuthRefused("unknown-key")
        if not await asyncio.to_thread(bcrypt.checkpw, key.encode(), row["hash"].encode()):
            raise AuthRefused("bad-secret")
        if row["revoked_at"] is not None:
            raise AuthRefused("revoked")
        if login is not None and not row["login_matches"]:
            raise AuthRefused("wrong-user")
        if row["disabled"]:
            raise AuthRefused("disabled-user")
        principal = Principal(
            user_id=row["user_id"],
            address=row["address"],
            key_id=row["id"],
            scopes=frozenset(row["scopes"]),
            expires_at=row["expires_at"],
        )
        rehash = None
        if _work_factor(row["hash"]) != self._cfg.bcrypt_rounds:
            # auth.bcrypt_rounds changed since this key was hashed: follow it now that we hold the key.
            fresh = await asyncio.to_thread(bcrypt.hashpw, key.encode(), bcrypt.gensalt(self._cfg.bcrypt_rounds))
            rehash = (row["hash"], fresh.decode())
        return principal, rehash

    async def _clear(self, client: str, login: str) -> None:
        """Forget (client, login)'s failures after a success; a database error only leaves them to expire."""
        self._counted.discard((client, login))
        try:
            await failure_store.clear(self._pool, client, login)
        except db.ERRORS as exc:
            log.warning("auth-count-failed client=%s error=%s", client, type(exc).__name__)

    def _refuse(self, service: str, client: str, login: str, reason: str) -> AuthRefused:
        from relate.runtime import metrics  # here: relatectl imports this module, and prometheus_client costs 50 ms

        metrics.auth_failure(service, reason)
        log.warning(
            "auth-failure service=%s client=%s user=%s reason=%s",
            service,
            client,
            json.dumps(login[:256]),
            reason,
        )
        return AuthRefused(reason)

    async def _fail(self, service: str, client: str, login: str, counted_as: str, reason: str) -> AuthRefused:
        """Count one failure in the database, log it, and return the refusal to raise."""
        cfg = self._cfg
        try:
            recorded = await failure_store.record(
                self._pool,
                client,
                counted_as,
                window=cfg.failure_window_seconds,
                max_per_login=cfg.max_failures,
                max_per_address=cfg.max_failures_per_address,
                lockout=cfg.lockout_seconds,
            )
        except db.ERRORS as exc:
            # Refused all the same: only the count is lost.
            refusal = self._refuse(service, client, login, reason)
            log.warning("auth-count-failed client=%s error=%s", client, type(exc).__name__)
            return refusal
        if not recorded.counted:
            # Locked out meanwhile (by another host, or a malformed key that skipped the check).
            return self._refuse(service, client, login, "locked-out")
        refusal = self._refuse(service, client, login, reason)
        if len(self._counted) >= _MAX_TRACKED_CLIENTS:
            self._counted.clear()  # a lost hint only leaves a count to expire by itself
        self._counted.add((client, counted_as))
        for which in recorded.locked:
            user = "*" if which == failure_store.WHOLE_ADDRESS else json.dumps(which[:256])
            from relate.runtime import metrics

            metrics.child(metrics.AUTH_LOCKOUTS, service).inc()
            log.warning("auth-lockout client=%s user=%s seconds=%d", client, user, cfg.lockout_seconds)
        return refusal
