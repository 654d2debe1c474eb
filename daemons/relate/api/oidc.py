"""Sign-in through an OpenID Connect provider: JWT bearer tokens on REST and the hub.

Policy (``api.oidc.*`` in relate.yaml(5)):

- With ``api.oidc.issuer`` set, a bearer credential shaped like a JWS
  (three base64url parts, the first a JSON header) is checked as a token of
  that issuer instead of as an API key; everything else is still a key.
- The provider's discovery document (``ISSUER/.well-known/openid-configuration``,
  whose ``issuer`` must be ours exactly) names its JWKS. Keys are cached for
  an hour, and fetched again at once when a token names a ``kid`` the cache
  lacks (the provider rotated), at most once per ``_REFRESH_GAP`` seconds so
  forged kids cannot make us hammer it. Documents are bounded in size and time.
- Only the configured asymmetric algorithms (RS256, ES256, EdDSA) are
  accepted, and the key must be of the algorithm's type: ``none`` and HS*
  (which would let a public key act as an HMAC secret) never are.
- ``iss`` must be the issuer, ``aud`` must hold the audience, ``exp`` must be
  present; ``exp``, ``nbf`` and ``iat`` are checked allowing
  ``api.oidc.clock_skew`` seconds.
- The user is the one owning the address in ``api.oidc.email_claim``
  (primary or alias; ``email_verified`` must be true unless configured
  otherwise); with ``api.oidc.provision`` a missing user at a hosted domain is
  created. A disabled user is refused.
- Scopes: each scope of the token (``scope``, space-separated, or ``scp``)
  grants what ``api.oidc.scopes`` maps it to; none mapped gives a principal
  with no scope, which every user route answers with 403.
- A token principal's ``key_id`` is the user's id negated: it never names an
  API key, and the per-key rate limits count all of a user's tokens together.
- Refusals are 401 for the client and one ``api-oidc-refused`` log line with
  the reason; a provider that cannot be reached is 503.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import time
from base64 import urlsafe_b64decode
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import jwt

from relate.auth import Principal
from relate.config import OidcConfig
from relate.errors import RelateError
from relate.mail.address import normalize_address
from relate.services import accounts as account_service
from relate.store import accounts

log = logging.getLogger("relate.api")

_MAX_TOKEN = 16 * 1024
_MAX_DOCUMENT = 1024 * 1024
_JWKS_MAX_AGE = 3600.0
_REFRESH_GAP = 5.0
_FETCH_TIMEOUT = aiohttp.ClientTimeout(total=10)


class TokenRefused(RelateError):
    """The token is not one we accept; ``reason`` is for the log only."""

    def __init__(self, reason: str) -> None:
        super().__init__("token refused")
        self.reason = reason


class ProviderUnavailable(RelateError):
    """The provider's discovery document or keys could not be fetched."""


def looks_like_jwt(credential: str) -> bool:
    """True for a compact JWS (``header.payload.signature``, the header a JSON object)."""
    parts = credential.split(".")
    return len(parts) == 3 and credential.startswith("eyJ") and len(credential) <= _MAX_TOKEN


def _header(token: str) -> dict[str, Any]:
    raw = token.split(".", 1)[0]
    try:
        header = json.loads(urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error):
        raise TokenRefused("malformed header") from None
    if not isinstance(header, dict):
        raise TokenRefused("malformed header")
    return header


class Verifier:
    """Checks tokens of one issuer; holds its discovery document and JWKS."""

    def __init__(self, cfg: OidcConfig, pool: asyncpg.Pool, *, clock: Callable[[], float] = time.monotonic) -> None:
        # Config.validate requires both when an issuer is set (and setup makes no verifier without one).
        self._cfg = cfg
        self._issuer: str = cfg.issuer or ""
        self._audience: str = cfg.audience or ""
        self._pool = pool
        self._clock = clock
        self._scopes = cfg.scope_map()
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def principal(self, token: str) -> Principal:
        """The principal ``token`` speaks for; raises TokenRefused or ProviderUnavailable."""
        header = _header(token)
        alg = header.get("alg")
        if alg not in self._cfg.algorithms:
            raise TokenRefused(f"algorithm {str(alg)[:20]!r} not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRefused("kid is not a string")
        key = await self._key(kid, alg)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._cfg.clock_skew,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"{type(exc).__name__}: {str(exc)[:80]}") from None
        return await self._principal_of(claims)

    async def _principal_of(self, claims: dict[str, Any]) -> Principal:
        email = claims.get(self._cfg.email_claim)
        if not isinstance(email, str) or not email:
            raise TokenRefused(f"no {self._cfg.email_claim} claim")
        if self._cfg.require_email_verified and claims.get("email_verified") is not True:
            raise TokenRefused("email not verified")
        try:
            address = normalize_address(email)
        except RelateError:
            raise TokenRefused("email claim is not an address") from None
        user = await accounts.get_user(self._pool, address)
        if user is None and self._cfg.provision:
            try:
                await account_service.add_user(self._pool, address)
                log.info("api-oidc-provisioned user=%s", address)
            except RelateError:
                pass  # not a hosted domain, or created meanwhile by another request
            user = await accounts.get_user(self._pool, address)
        if user is None:
            raise TokenRefused(f"no user for {address}")
        if user["disabled"]:
            raise TokenRefused(f"user {user['address']} is disabled")
        granted: set[str] = set()
        for scope in _token_scopes(claims):
            granted |= self._scopes.get(scope, set())
        exp = claims["exp"]
        return Principal(
            user_id=user["id"],
            address=user["address"],
            key_id=-user["id"],
            scopes=frozenset(granted),
            expires_at=datetime.fromtimestamp(exp, UTC) if isinstance(exp, int | float) else None,
        )

    async def _key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        if self._due(kid):
            async with self._lock:
                if self._due(kid):  # another request may have fetched while this one waited
                    await self._refresh()
        found = self._find(kid)
        if found is None:
            raise TokenRefused(f"no key {str(kid)[:40]!r} in the provider's JWKS")
        if found.get("alg") not in (None, alg):
            raise TokenRefused(f"key {kid!r} is for {found.get('alg')!r}, token says {alg!r}")
        try:
            return jwt.PyJWK(found, algorithm=alg)
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"key {str(kid)[:40]!r} unusable for {alg}: {exc}") from None

    def _due(self, kid: str | None) -> bool:
        """Fetch the keys: never fetched, an hour old, or missing this kid and not fetched just now."""
        if self._fetched_at is None:
            return True
        age = self._clock() - self._fetched_at
        return age > _JWKS_MAX_AGE or (self._find(kid) is None and age >= _REFRESH_GAP)

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        if kid is not None:
            return self._keys.get(kid)
        # No kid: only an unambiguous JWKS will do.
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    async def _refresh(self) -> None:
        discovery = await self._fetch(self._issuer.rstrip("/") + "/.well-known/openid-configuration")
        if discovery.get("issuer") != self._issuer:
            raise ProviderUnavailable(f"the discovery document names issuer {str(discovery.get('issuer'))[:100]!r}")
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise ProviderUnavailable("the discovery document has no jwks_uri")
        jwks = await self._fetch(jwks_uri)
        keys = jwks.get("keys")
        if not isinstance(keys, list):
            raise ProviderUnavailable("the JWKS has no keys list")
        usable = [k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]
        self._keys = {str(k.get("kid", "")): k for k in usable}
        self._fetched_at = self._clock()
        log.info("api-oidc-jwks issuer=%s keys=%d", self._issuer, len(self._keys))

    async def _fetch(self, url: str) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=_FETCH_TIMEOUT)
        try:
            async with self._session.get(url, allow_redirects=False) as resp:
                body = await resp.content.read(_MAX_DOCUMENT + 1)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderUnavailable(f"{url}: {type(exc).__name__}") from None
        if status != 200 or len(body) > _MAX_DOCUMENT:
            raise ProviderUnavailable(f"{url}: status {status}, {len(body)} bytes")
        try:
            doc = json.loads(body)
        except ValueError:
            raise ProviderUnavailable(f"{url}: not JSON") from None
        if not isinstance(doc, dict):
            raise ProviderUnavailable(f"{url}: not a JSON object")
        return doc


def _token_scopes(claims: dict[str, Any]) -> list[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return scope.split()
    scp = claims.get("scp")
    if isinstance(scp, list):
        return [s for s in scp if isinstance(s, str)]
    return []
