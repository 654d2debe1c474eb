"""The user's keys over REST: list, create (shown once, with client settings), revoke, rotate, and their limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relate.services import accounts
from tests.api.conftest import Api

KEYS = "/api/smtp-credentials"


async def _key_id(api: Api, key: str) -> int:
    """The id of ``key`` as the API reports it (the one marked current)."""
    status, body = await api.call("GET", KEYS, key)
    assert status == 200
    (current,) = [k for k in body["items"] if k["current"]]
    return int(current["id"])


async def test_list_shows_own_keys_without_secrets(api: Api) -> None:
    """GET lists the caller's own keys with prefix and scopes, never a hash, a secret or another user's key."""
    status, body = await api.call("GET", KEYS)
    assert status == 200
    assert body["total"] == len(body["items"]) == 4  # alice's app, api:read, api:write and imap keys
    assert {tuple(k["scopes"]) for k in body["items"]} == {("app",), ("api:read",), ("api:write",), ("imap",)}
    assert [k["current"] for k in body["items"]].count(True) == 1
    text = str(body)
    for secret in (api.alice, api.alice_read, api.alice_write, api.alice_imap, api.bob):
        assert secret not in text
    assert "$2b$" not in text  # no bcrypt hash
    for item in body["items"]:
        assert set(item) == {
            "id",
            "name",
            "prefix",
            "scopes",
            "createdAt",
            "lastUsedAt",
            "expiresAt",
            "expired",
            "current",
        }


async def test_create_key_shown_once_with_settings_and_working(api: Api) -> None:
    """POST returns the new key once plus host, ports and username; the key works with exactly its scopes."""
    status, body = await api.call("POST", KEYS, json={"name": "phone", "scopes": ["api:read", "imap"]})
    assert status == 201
    key = body["key"]
    assert key.startswith("relate_")
    assert body["prefix"] in key
    assert body["name"] == "phone"
    assert body["scopes"] == ["api:read", "imap"]
    settings = body["settings"]
    assert settings["hostname"] == "mail.example.com"
    assert settings["username"] == "alice@example.com"
    assert settings["imap"] == [{"port": 993, "security": "tls"}, {"port": 143, "security": "starttls"}]
    assert settings["pop3"] == [{"port": 995, "security": "tls"}, {"port": 110, "security": "starttls"}]
    assert settings["smtp"] == [{"port": 465, "security": "tls"}, {"port": 587, "security": "starttls"}]
    # It reads, it may not write, and the list shows it without its secret.
    status, profile = await api.call("GET", "/api/profile", key)
    assert status == 200
    assert profile["address"] == "alice@example.com"
    status, _ = await api.call("POST", KEYS, key, json={"name": "x", "scopes": ["api:read"]})
    assert status == 403
    status, listed = await api.call("GET", KEYS)
    (mine,) = [k for k in listed["items"] if k["id"] == body["id"]]
    assert mine["prefix"] == body["prefix"]
    assert "key" not in mine
    # Accepted for an IMAP login too (the scope it was given).
    principal = await api.server.state.authenticator.authenticate(
        "alice@example.com", key, "imap", client="127.0.0.1", service="imap"
    )
    assert principal.key_id == body["id"]


async def test_settings_follow_the_configuration(api: Api) -> None:
    """The settings use api.public_hostname and the configured ports, and leave out a role that is off."""
    api.cfg.api.public_hostname = "imap.example.org"
    api.cfg.imap.imaps.listen = ["127.0.0.1:10993"]
    api.cfg.pop3.pop3.listen = []
    api.cfg.pop3.pop3s.listen = []
    status, body = await api.call("POST", KEYS, json={"name": "laptop", "scopes": ["imap", "smtp"]})
    assert status == 201
    assert body["settings"]["hostname"] == "imap.example.org"
    assert body["settings"]["imap"][0] == {"port": 10993, "security": "tls"}
    assert body["settings"]["pop3"] == []


async def test_a_key_cannot_mint_scopes_it_lacks(api: Api) -> None:
    """An api:write key may mint api:write but not imap or app; an app key may mint any user scope."""
    status, body = await api.call("POST", KEYS, api.alice_write, json={"name": "a", "scopes": ["imap"]})
    assert status == 403
    assert body["error"] == "forbidden"
    assert "imap" in body["message"]
    status, _ = await api.call("POST", KEYS, api.alice_write, json={"name": "b", "scopes": ["app"]})
    assert status == 403
    status, body = await api.call("POST", KEYS, api.alice_write, json={"name": "c", "scopes": ["api:write"]})
    assert status == 201
    status, body = await api.call("POST", KEYS, json={"name": "d", "scopes": ["smtp", "imap", "pop3", "app"]})
    assert status == 201
    assert body["scopes"] == ["smtp", "imap", "pop3", "app"]


async def test_create_key_rejects_bad_input(api: Api) -> None:
    """Unknown or internal scopes, no name, past or malformed expiry, unknown fields and non-JSON are refused."""
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    cases = [
        {"name": "x", "scopes": ["root"]},
        {"name": "x", "scopes": ["internal"]},
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": "imap"},
        {"name": "", "scopes": ["imap"]},
        {"scopes": ["imap"]},
        {"name": "x" * 101, "scopes": ["imap"]},
        {"name": "x", "scopes": ["imap"], "expiresAt": past},
        {"name": "x", "scopes": ["imap"], "expiresAt": "next tuesday"},
        {"name": "x", "scopes": ["imap"], "admin": True},
    ]
    # Two keys share the calls: key management allows 10 a minute per key.
    for i, case in enumerate(cases):
        status, body = await api.call("POST", KEYS, api.alice if i % 2 else api.alice_write, json=case)
        assert status == 422, case
        assert body["error"] == "invalid", case
    status, _ = await api.call("POST", KEYS, data=b"name=x", headers={"Content-Type": "text/plain"})
    assert status == 415
    status, listed = await api.call("GET", KEYS, api.alice_read)
    assert listed["total"] == 4  # nothing was created


async def test_expiring_key_lists_its_expiry_and_works(api: Api) -> None:
    """A key created with expiresAt shows that date and works until then."""
    when = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    status, body = await api.call(
        "POST", KEYS, json={"name": "trip", "scopes": ["api:read"], "expiresAt": when.isoformat()}
    )
    assert status == 201
    assert datetime.fromisoformat(body["expiresAt"]) == when
    assert body["expired"] is False
    status, _ = await api.call("GET", "/api/mailboxes", body["key"])
    assert status == 200


async def test_revoked_key_stops_working_at_once(api: Api) -> None:
    """DELETE revokes: the key (even freshly cached) gets 401 on its next request and leaves the list."""
    status, made = await api.call("POST", KEYS, json={"name": "old phone", "scopes": ["api:read"]})
    assert status == 201
    status, _ = await api.call("GET", "/api/mailboxes", made["key"])
    assert status == 200  # now in the authenticator's cache
    status, body = await api.call("DELETE", f"{KEYS}/{made['id']}")
    assert status == 200
    assert body == {"revoked": True, "id": made["id"]}
    status, body = await api.call("GET", "/api/mailboxes", made["key"])
    assert status == 401
    status, listed = await api.call("GET", KEYS)
    assert made["id"] not in [k["id"] for k in listed["items"]]
    status, _ = await api.call("DELETE", f"{KEYS}/{made['id']}")
    assert status == 404


async def test_a_key_revokes_only_keys_whose_scopes_it_holds(api: Api) -> None:
    """An api:read,api:write key cannot revoke the user's smtp, imap or app keys (403, they keep working); a key
    holding smtp may revoke an smtp key; the app key may revoke any."""
    status, writer = await api.call("POST", KEYS, json={"name": "web", "scopes": ["api:read", "api:write"]})
    assert status == 201
    for scopes in (["smtp"], ["imap"], ["app"]):
        status, made = await api.call("POST", KEYS, json={"name": "device", "scopes": scopes})
        assert status == 201
        status, body = await api.call("DELETE", f"{KEYS}/{made['id']}", writer["key"])
        assert (status, body["error"]) == (403, "forbidden")
        assert await api.pool.fetchval("SELECT revoked_at FROM api_keys WHERE id = $1", made["id"]) is None
    status, mailer = await api.call("POST", KEYS, json={"name": "mailer", "scopes": ["smtp", "api:write"]})
    status, phone = await api.call("POST", KEYS, json={"name": "phone", "scopes": ["smtp"]})
    status, _ = await api.call("DELETE", f"{KEYS}/{phone['id']}", mailer["key"])
    assert status == 200
    status, _ = await api.call("DELETE", f"{KEYS}/{writer['id']}")
    assert status == 200
    status, _ = await api.call("GET", "/api/mailboxes", writer["key"])
    assert status == 401


async def test_a_key_revokes_or_rotates_itself_only_with_self_true(api: Api) -> None:
    """DELETE or rotate of the calling key itself is 409 without ?self=true (it keeps working), done with it."""
    status, made = await api.call("POST", KEYS, json={"name": "me", "scopes": ["api:read", "api:write"]})
    assert status == 201
    for method, path in (("DELETE", f"{KEYS}/{made['id']}"), ("POST", f"{KEYS}/{made['id']}/rotate")):
        status, body = await api.call(method, path, made["key"])
        assert (status, body["error"]) == (409, "conflict")
        assert "self=true" in body["message"]
    status, _ = await api.call("GET", "/api/mailboxes", made["key"])
    assert status == 200
    status, body = await api.call("DELETE", f"{KEYS}/{made['id']}?self=true", made["key"])
    assert (status, body) == (200, {"revoked": True, "id": made["id"]})
    status, _ = await api.call("GET", "/api/mailboxes", made["key"])
    assert status == 401


async def _last_used(api: Api, key_id: int) -> datetime | None:
    found: datetime | None = await api.pool.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key_id)
    return found


async def test_refused_logins_do_not_update_last_used(api: Api) -> None:
    """A key refused for a missing scope (403) or for its expiry (401) keeps its lastUsedAt; a success sets it."""
    status, made = await api.call("POST", KEYS, json={"name": "reader", "scopes": ["api:read"]})
    assert status == 201
    status, _ = await api.call("POST", "/api/smtp-credentials", made["key"], json={"name": "x", "scopes": ["smtp"]})
    assert status == 403
    assert await _last_used(api, made["id"]) is None
    status, expiring = await api.call("POST", KEYS, json={"name": "old", "scopes": ["api:read"]})
    await api.pool.execute("UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = $1", expiring["id"])
    status, _ = await api.call("GET", "/api/mailboxes", expiring["key"])
    assert status == 401
    assert await _last_used(api, expiring["id"]) is None
    status, fresh = await api.call("POST", KEYS, json={"name": "fresh", "scopes": ["api:read"]})
    status, _ = await api.call("GET", "/api/mailboxes", fresh["key"])
    assert status == 200
    assert await _last_used(api, fresh["id"]) is not None


async def test_an_expired_key_cannot_be_rotated(api: Api) -> None:
    """Rotating a key whose expiry has passed is 409 (the new key would carry a past expiry); no key is made."""
    status, made = await api.call("POST", KEYS, json={"name": "trip", "scopes": ["api:read"]})
    await api.pool.execute("UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = $1", made["id"])
    status, body = await api.call("POST", f"{KEYS}/{made['id']}/rotate")
    assert (status, body["error"]) == (409, "conflict")
    _, listed = await api.call("GET", KEYS)
    assert [k["name"] for k in listed["items"]].count("trip") == 1


async def test_other_users_keys_are_out_of_reach(api: Api) -> None:
    """Bob cannot see, revoke or rotate Alice's keys: 404, and her key keeps working."""
    alice_id = await _key_id(api, api.alice_read)
    status, listed = await api.call("GET", KEYS, api.bob)
    assert alice_id not in [k["id"] for k in listed["items"]]
    status, body = await api.call("DELETE", f"{KEYS}/{alice_id}", api.bob)
    assert status == 404
    assert body["error"] == "not_found"
    status, _ = await api.call("POST", f"{KEYS}/{alice_id}/rotate", api.bob)
    assert status == 404
    status, _ = await api.call("DELETE", f"{KEYS}/not-a-number", api.bob)
    assert status == 404
    status, _ = await api.call("GET", "/api/mailboxes", api.alice_read)
    assert status == 200


async def test_rotate_replaces_the_secret(api: Api) -> None:
    """Rotating gives a new secret with the same name and scopes; the old secret stops working at once."""
    status, made = await api.call("POST", KEYS, json={"name": "desktop", "scopes": ["api:read", "smtp"]})
    assert status == 201
    status, _ = await api.call("GET", "/api/mailboxes", made["key"])
    assert status == 200
    status, rotated = await api.call("POST", f"{KEYS}/{made['id']}/rotate")
    assert status == 201
    assert rotated["name"] == "desktop"
    assert rotated["scopes"] == ["api:read", "smtp"]
    assert rotated["key"] != made["key"]
    assert rotated["id"] != made["id"]
    assert rotated["settings"]["username"] == "alice@example.com"
    status, _ = await api.call("GET", "/api/mailboxes", made["key"])
    assert status == 401
    status, _ = await api.call("GET", "/api/mailboxes", rotated["key"])
    assert status == 200
    status, _ = await api.call("POST", f"{KEYS}/{made['id']}/rotate")
    assert status == 404  # the old one is revoked now


async def test_rotate_cannot_escalate(api: Api) -> None:
    """An api:write key cannot rotate the app key (that would hand it an app secret); the app key keeps working."""
    app_id = await _key_id(api, api.alice)
    status, body = await api.call("POST", f"{KEYS}/{app_id}/rotate", api.alice_write)
    assert status == 403
    assert body["error"] == "forbidden"
    status, _ = await api.call("GET", "/api/profile", api.alice)
    assert status == 200


async def test_scopes_and_authentication(api: Api) -> None:
    """No key: 401; an imap-only key: 403; api:read may list but not create."""
    async with api.session.get(api.url + KEYS) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"] == "unauthorized"
    status, _ = await api.call("GET", KEYS, api.alice_imap)
    assert status == 403
    status, _ = await api.call("GET", KEYS, api.alice_read)
    assert status == 200
    status, _ = await api.call("POST", KEYS, api.alice_read, json={"name": "x", "scopes": ["api:read"]})
    assert status == 403


async def test_key_management_has_its_own_rate_limit(api: Api) -> None:
    """The 11th key-management call in a minute gets 429 with Retry-After; other routes still answer."""
    for _ in range(api.cfg.api.key_calls_per_minute):
        status, _ = await api.call("GET", KEYS, api.alice_read)
        assert status == 200
    async with api.session.get(api.url + KEYS, headers=api.auth(api.alice_read)) as resp:
        assert resp.status == 429
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
        assert (await resp.json())["error"] == "rate_limited"
    status, _ = await api.call("GET", "/api/mailboxes", api.alice_read)
    assert status == 200


async def test_revoking_a_key_revoked_elsewhere_is_404(api: Api) -> None:
    """A key revoked by the admin (relatectl) meanwhile answers 404 to DELETE and rotate."""
    status, made = await api.call("POST", KEYS, json={"name": "old", "scopes": ["imap"]})
    assert status == 201
    assert await accounts.revoke_key(api.pool, made["id"])
    status, _ = await api.call("DELETE", f"{KEYS}/{made['id']}")
    assert status == 404
    status, _ = await api.call("POST", f"{KEYS}/{made['id']}/rotate")
    assert status == 404
