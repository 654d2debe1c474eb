"""Preferences over REST: defaults, PUT, PATCH as a merge patch, validation, and the documented schema."""

from __future__ import annotations

from typing import Any

from relate.services import accounts
from tests.api.conftest import Api
from tests.api.test_openapi import _call, _document

DEFAULTS = {
    "pageSize": 50,
    "theme": "system",
    "readingPane": "right",
    "remoteImages": "ask",
    "signature": "",
    "defaultFrom": None,
    "notifications": {"desktop": False, "sound": False, "push": True, "inboxOnly": True},
}


async def test_defaults_then_a_patch_that_other_keys_see(api: Api) -> None:
    """A new user reads the defaults; a PATCH changes only what it names, for all of the user's keys only."""
    assert await api.call("GET", "/api/preferences") == (200, DEFAULTS)
    change = {"theme": "dark", "notifications": {"desktop": True}}
    status, body = await api.call("PATCH", "/api/preferences", json=change)
    assert status == 200
    expected = DEFAULTS | {"theme": "dark", "notifications": DEFAULTS["notifications"] | {"desktop": True}}
    assert body == expected
    assert await api.call("GET", "/api/preferences", api.alice_read) == (200, expected)
    assert await api.call("GET", "/api/preferences", api.bob) == (200, DEFAULTS)


async def test_put_replaces_and_null_resets(api: Api) -> None:
    """PUT leaves out-of-body preferences at their defaults; a PATCH null returns one to its default."""
    await api.call("PATCH", "/api/preferences", json={"theme": "dark", "pageSize": 20})
    status, body = await api.call("PUT", "/api/preferences", json={"readingPane": "bottom", "signature": "-- \nA"})
    assert status == 200
    assert body == DEFAULTS | {"readingPane": "bottom", "signature": "-- \nA"}
    status, body = await api.call("PATCH", "/api/preferences", json={"readingPane": None})
    assert body == DEFAULTS | {"signature": "-- \nA"}


async def test_default_from_must_be_the_users_own(api: Api) -> None:
    """defaultFrom takes the user's primary address or an alias (normalised), never another user's."""
    await accounts.add_alias(api.pool, "sales@example.com", "alice@example.com")
    status, body = await api.call("PATCH", "/api/preferences", json={"defaultFrom": "Sales@Example.com"})
    assert (status, body["defaultFrom"]) == (200, "sales@example.com")
    status, body = await api.call("PATCH", "/api/preferences", json={"defaultFrom": "bob@example.com"})
    assert (status, body["error"]) == (422, "invalid")
    assert "own addresses" in body["message"]
    assert (await api.call("GET", "/api/preferences"))[1]["defaultFrom"] == "sales@example.com"


async def test_bad_values_are_refused_and_nothing_is_stored(api: Api) -> None:
    """Unknown names, wrong types and out-of-bounds values get 422 naming the preference; nothing changes."""
    cases: list[tuple[dict[str, Any], str]] = [
        ({"colour": "red"}, "colour"),
        ({"pageSize": 5}, "pageSize"),
        ({"pageSize": "50"}, "pageSize"),
        ({"pageSize": True}, "pageSize"),
        ({"theme": "neon"}, "theme"),
        ({"signature": "x" * 10001}, "signature"),
        ({"notifications": {"desktop": "yes"}}, "notifications.desktop"),
        ({"notifications": {"email": True}}, "notifications"),
        ({"notifications": 1}, "notifications"),
        ({"theme": "dark", "defaultFrom": 7}, "defaultFrom"),
    ]
    for method in ("PATCH", "PUT"):
        for body, named in cases:
            status, answer = await api.call(method, "/api/preferences", json=body)
            assert (status, answer["error"]) == (422, "invalid"), (method, body)
            assert named in answer["message"], (body, answer)
    assert await api.call("GET", "/api/preferences") == (200, DEFAULTS)


async def test_scopes_and_answers_match_the_document(api: Api) -> None:
    """Reading needs api:read and writing api:write; every answer has the documented status and shape."""
    doc = await _document(api)
    await _call(api, doc, "GET", "/api/preferences", "/api/preferences", 200, api.alice_read)
    await _call(api, doc, "PATCH", "/api/preferences", "/api/preferences", 403, api.alice_read, json={})
    await _call(api, doc, "PUT", "/api/preferences", "/api/preferences", 200, api.alice_write, json={"theme": "light"})
    await _call(api, doc, "PATCH", "/api/preferences", "/api/preferences", 422, json={"theme": 3})
    await _call(api, doc, "PATCH", "/api/preferences", "/api/preferences", 200, json={"theme": None})
    await _call(api, doc, "GET", "/api/preferences", "/api/preferences", 401, "relate_000000000000_" + "x" * 32)
