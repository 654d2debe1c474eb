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
- After ``auth.max_failures`` (5) failures from one client address within
  ``auth.failure_window_seconds`` (15 min), that address is refused for
  ``auth.lockout_seconds`` (15 min) without checking anything. A success
  clears the address's count. The count is per process.
- Each failure is logged as one line for fail2ban::

      auth-failure service=imap client=192.0.2.7 user="bob@example.com" reason=bad-secret

  ``user`` is JSON-quoted, so whatever a client sends cannot forge a line.
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
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import bcrypt

from relate.config import AuthConfig
from relate.errors import Invalid, RelateError
from relate.store import keys as key_store

log = logging.getLogger("relate.auth")

# Scopes a user's key may carry; `internal` is for daemon-to-API calls only.
USER_SCOPES = ("smtp", "imap", "pop3", "api:read", "api:write", "app")
INTERNAL_SCOPE = "internal"
# The start of the refusal reason for a valid key without the scope asked for.
MISSING_SCOPE = "missing-scope:"
_IMPLIED = {"app": {"api:read", "api:write"}}

KEY_PREFIX = "relate_"
_KEY_RE = re.compile(r"^relate_([0-9a-f]{12})_([A-Za-z0-9_\-]{32})$")
_MAX_TRACKED_CLIENTS = 100_000


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
        self._failures: dict[str, deque[float]] = {}
        self._locked: dict[str, float] = {}
        # A hash to check against when the prefix is unknown, so that case
        # costs the same time as a wrong secret.
        self._dummy_hash = bcrypt.hashpw(b"relate-dummy", bcrypt.gensalt(cfg.bcrypt_rounds))

    async def authenticate(
        self, login: str | None, key: str, scope: str | None, *, client: str, service: str
    ) -> Principal:
        """The principal for (login, key) holding ``scope``, or AuthRefused.

        ``login=None``: a bearer key. ``scope=None``: the caller checks scopes
        itself (the REST API answers a valid key without the scope with 403,
        which is not a failed login).
        """
        now = self._clock()
        if self._is_locked(client, now):
            raise self._refuse(service, client, login or "-", "locked-out", count=False)
        try:
            principal = await self._verify(login, key)
        except AuthRefused as exc:
            raise self._refuse(service, client, login or "-", exc.reason) from None
        if principal.expires_at is not None and principal.expires_at <= datetime.now(UTC):
            raise self._refuse(service, client, login or principal.address, "expired")
        if scope is not None and not principal.has(scope):
            raise self._refuse(service, client, login or principal.address, f"{MISSING_SCOPE}{scope}")
        self._failures.pop(client, None)
        return principal

    def check_internal(self, key: str, *, client: str) -> bool:
        """Whether ``key`` is the configured internal key (constant time)."""
        ok = bool(self._internal_key) and hmac.compare_digest(key.encode(), (self._internal_key or "").encode())
        if not ok:
            self._refuse("internal", client, "-", "bad-internal-key")
        return ok

    def forget(self) -> None:
        """Drop every cached verification (after a revocation in this process)."""
        self._cache.clear()

    async def _verify(self, login: str | None, key: str) -> Principal:
        login = None if login is None else login.strip().lower()
        cache_key = hashlib.sha256(
            (b"\1" if login is None else login.encode("utf-8", "surrogateescape") + b"\0")
            + key.encode("utf-8", "surrogateescape")
        ).digest()
        now = self._clock()
        hit = self._cache.get(cache_key)
        if hit is not None:
            if hit[1] > now:
                return hit[0]
            del self._cache[cache_key]
        prefix = key_prefix(key)
        if prefix is None:
            raise AuthRefused("malformed-key")
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
        await key_store.touch(self._pool, row["id"], rehash=rehash)
        if len(self._cache) > _MAX_TRACKED_CLIENTS:
            self._cache.clear()
        self._cache[cache_key] = (principal, now + self._cfg.cache_seconds)
        return principal

    def _is_locked(self, client: str, now: float) -> bool:
        until = self._locked.get(client)
        if until is None:
            return False
        if until > now:
            return True
        del self._locked[client]
        return False

    def _refuse(self, service: str, client: str, login: str, reason: str, *, count: bool = True) -> AuthRefused:
        log.warning(
            "auth-failure service=%s client=%s user=%s reason=%s",
            service,
            client,
            json.dumps(login[:256]),
            reason,
        )
        if count:
            now = self._clock()
            window = self._failures.setdefault(client, deque())
            window.append(now)
            while window and window[0] <= now - self._cfg.failure_window_seconds:
                window.popleft()
            if len(window) >= self._cfg.max_failures:
                self._locked[client] = now + self._cfg.lockout_seconds
                del self._failures[client]
                log.warning("auth-lockout client=%s seconds=%d", client, self._cfg.lockout_seconds)
            if len(self._failures) > _MAX_TRACKED_CLIENTS:
                self._prune(now)
        return AuthRefused(reason)

    def _prune(self, now: float) -> None:
        horizon = now - self._cfg.failure_window_seconds
        for client in [c for c, w in self._failures.items() if not w or w[-1] <= horizon]:
            del self._failures[client]
