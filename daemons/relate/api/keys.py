"""The user's own keys (app passwords) over REST: list, create, revoke, rotate.

Policy:

- Every route here counts as key management (``api.key_calls_per_minute``,
  10 by default, on top of the other limits). Listing needs ``api:read``;
  creating, revoking and rotating need ``api:write``.
- A key never reaches past what it holds: each scope it creates, and each
  scope of a key it revokes or rotates, must be one the calling key carries
  (``app`` counts as carrying ``api:read`` and ``api:write``), except that
  an ``app`` key (the user's own apps) may manage any user scope. So an
  ``api:read,api:write`` key cannot cut off the user's ``smtp``, ``imap``
  or ``app`` keys. Rotating hands out a new secret with the old key's scopes
  and expiry; a key whose expiry has passed cannot be rotated (expiry in the
  past is refused everywhere: create one instead).
- A key revokes or rotates itself only when asked explicitly (``?self=true``);
  without it the request answers 409, so a client cannot lock itself out
  by picking the wrong row.
- Keys of other users are invisible: their ids answer 404, like missing ones.
- A key's secret is shown once, in the answer that creates it (create,
  rotate), with the connection settings a mail client needs. Hashes never
  leave the store. A revoked key stops working at once in this process (the
  authenticator's cache is dropped); other API processes stop trusting it
  within ``auth.cache_seconds``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from relate import auth
from relate.api.app import json_body, path_id, state
from relate.api.errors import ApiError, invalid
from relate.api.security import READ, WRITE, principal, requires
from relate.auth import Principal
from relate.errors import Invalid
from relate.services import accounts
from relate.services.clients import connection_settings

routes = web.RouteTableDef()

MAX_NAME = 100


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def key_view(row: dict[str, Any], current_key: int | None = None) -> dict[str, Any]:
    """A key as the API shows it: never the hash, never the secret."""
    expires = row["expires_at"]
    return {
        "id": row["id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "scopes": list(row["scopes"]),
        "createdAt": _iso(row["created_at"]),
        "lastUsedAt": _iso(row["last_used_at"]),
        "expiresAt": _iso(expires),
        "expired": expires is not None and expires <= datetime.now(UTC),
        "current": row["id"] == current_key,
    }


def _check_holds(who: Principal, scopes: list[str], action: str) -> None:
    """403 unless the calling key carries every scope in ``scopes`` (an ``app`` key manages any user scope)."""
    if "app" in who.scopes:
        return
    missing = [s for s in scopes if not who.has(s)]
    if missing:
        raise ApiError(403, "forbidden", f"this key cannot {action} scopes it lacks: {', '.join(missing)}")


def _check_self(request: web.Request, key_id: int, action: str) -> None:
    """409 when the calling key names itself without ``?self=true``."""
    if key_id != principal(request).key_id:
        return
    raw = request.query.get("self", "")
    if raw.lower() not in ("true", "1", "yes"):
        raise ApiError(409, "conflict", f"this is the key making the request; add ?self=true to {action} it")


def _scopes(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value) or len(value) > 20:
        raise invalid(f"scopes must be a list of scope names: {', '.join(auth.USER_SCOPES)}")
    try:
        return auth.parse_scopes(value)
    except Invalid as exc:
        raise invalid(str(exc)) from None


def _expiry(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid("expiresAt must be an ISO 8601 date-time")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise invalid("expiresAt must be an ISO 8601 date-time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)  # its range: accounts.create_key


def _created(request: web.Request, key: str, row: dict[str, Any]) -> web.Response:
    who = principal(request)
    body = key_view(row, who.key_id) | {
        "key": key,
        "settings": connection_settings(state(request).cfg, who.address),
    }
    return web.json_response(body, status=201, headers={"Cache-Control": "no-store"})


@routes.get("/api/smtp-credentials")
@requires(READ, key_management=True)
async def list_keys(request: web.Request) -> web.Response:
    who = principal(request)
    rows = await accounts.list_user_keys(state(request).pool, who.user_id)
    return web.json_response({"items": [key_view(r, who.key_id) for r in rows], "total": len(rows)})


@routes.post("/api/smtp-credentials")
@requires(WRITE, key_management=True)
async def create_key(request: web.Request) -> web.Response:
    data = await json_body(request)
    unknown = set(data) - {"name", "scopes", "expiresAt"}
    if unknown:
        raise invalid(f"unknown fields: {', '.join(sorted(unknown))}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise invalid("name is required (a label such as 'phone')")
    if len(name.strip()) > MAX_NAME or not name.strip().isprintable():
        raise invalid(f"name must be printable text of at most {MAX_NAME} characters")
    scopes = _scopes(data.get("scopes"))
    expires_at = _expiry(data.get("expiresAt"))
    who = principal(request)
    _check_holds(who, scopes, "grant")
    st = state(request)
    key, row = await accounts.create_key(
        st.pool, who.address, name, scopes, expires_at=expires_at, rounds=st.cfg.auth.bcrypt_rounds
    )
    return _created(request, key, row)


@routes.delete("/api/smtp-credentials/{id}")
@requires(WRITE, key_management=True)
async def revoke_key(request: web.Request) -> web.Response:
    st = state(request)
    key_id = path_id(request)
    # A key already revoked answers 404 too: it is gone from the list.
    row = await accounts.get_user_key(st.pool, principal(request).user_id, key_id)
    if row["revoked_at"] is not None:
        raise ApiError(404, "not_found", "key not found")
    _check_holds(principal(request), list(row["scopes"]), "revoke keys with")
    _check_self(request, key_id, "revoke")
    if not await accounts.revoke_key(st.pool, key_id):
        raise ApiError(404, "not_found", "key not found")
    st.authenticator.forget()
    return web.json_response({"revoked": True, "id": key_id})


@routes.post("/api/smtp-credentials/{id}/rotate")
@requires(WRITE, key_management=True)
async def rotate_key(request: web.Request) -> web.Response:
    st = state(request)
    who = principal(request)
    key_id = path_id(request)
    old = await accounts.get_user_key(st.pool, who.user_id, key_id)
    if old["revoked_at"] is not None:
        raise ApiError(404, "not_found", "key not found")
    _check_holds(who, list(old["scopes"]), "rotate keys with")
    _check_self(request, key_id, "rotate")
    key, row = await accounts.rotate_key(st.pool, key_id, rounds=st.cfg.auth.bcrypt_rounds, user_id=who.user_id)
    st.authenticator.forget()
    return _created(request, key, row)
