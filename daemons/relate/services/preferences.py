"""Per-user preferences for the apps: one JSON object with a fixed schema.

Policy: :data:`SCHEMA` (a JSON Schema, also the OpenAPI document's
``Preferences``) names every preference, its type and bounds, and its
default. Only values a user set are stored (store/preferences.py); reading
fills in the defaults, so adding a preference here needs no migration and a
user who never chose one follows a changed default. Writing checks the whole
result: an unknown name, a wrong type or a value out of bounds is refused
(Invalid, naming the preference) and nothing is stored. ``defaultFrom`` must
be one of the user's own addresses. PUT replaces everything (what it leaves
out returns to its default); PATCH is a JSON merge patch (RFC 7396): a
``null`` returns that preference to its default.
"""

from __future__ import annotations

import copy
from typing import Any

import asyncpg

from relate.errors import Invalid
from relate.mail.address import normalize_address
from relate.store import accounts
from relate.store import preferences as store

_NOTIFICATIONS = {
    "type": "object",
    "additionalProperties": False,
    "description": "what the apps tell the user about new mail",
    "properties": {
        "desktop": {"type": "boolean", "default": False, "description": "a desktop notification per new message"},
        "sound": {"type": "boolean", "default": False, "description": "a sound with it"},
        "push": {"type": "boolean", "default": True, "description": "web push to subscribed browsers"},
        "inboxOnly": {"type": "boolean", "default": True, "description": "only for mail arriving in INBOX"},
    },
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "pageSize": {"type": "integer", "minimum": 10, "maximum": 100, "default": 50, "description": "list page"},
        "theme": {"type": "string", "enum": ["system", "light", "dark"], "default": "system"},
        "readingPane": {"type": "string", "enum": ["right", "bottom", "off"], "default": "right"},
        "remoteImages": {
            "type": "string",
            "enum": ["ask", "always", "never"],
            "default": "ask",
            "description": "remote images and CSS in HTML mail: blocked with an offer to load them (ask), loaded "
            "at once (always), or blocked without the offer (never); the server always sends them blocked",
        },
        "signature": {"type": "string", "maxLength": 10000, "default": "", "description": "plain text"},
        "defaultFrom": {
            "type": ["string", "null"],
            "format": "email",
            "default": None,
            "description": "one of the user's addresses; null: the primary address",
        },
        "notifications": _NOTIFICATIONS,
    },
}


def defaults() -> dict[str, Any]:
    out = {}
    for name, spec in SCHEMA["properties"].items():
        if spec["type"] == "object":
            out[name] = {k: v["default"] for k, v in spec["properties"].items()}
        else:
            out[name] = copy.deepcopy(spec["default"])
    return out


def _check(name: str, spec: dict[str, Any], value: Any) -> None:
    kind = spec["type"]
    kinds = kind if isinstance(kind, list) else [kind]
    if value is None and "null" in kinds:
        return
    if "integer" in kinds and isinstance(value, int) and not isinstance(value, bool):
        if not spec["minimum"] <= value <= spec["maximum"]:
            raise Invalid(f"{name} must be between {spec['minimum']} and {spec['maximum']}")
        return
    if "boolean" in kinds and isinstance(value, bool):
        return
    if "string" in kinds and isinstance(value, str):
        if "enum" in spec and value not in spec["enum"]:
            raise Invalid(f"{name} must be one of {', '.join(spec['enum'])}")
        if len(value) > spec.get("maxLength", 320):
            raise Invalid(f"{name} is longer than {spec.get('maxLength', 320)} characters")
        return
    if "object" in kinds and isinstance(value, dict):
        unknown = set(value) - set(spec["properties"])
        if unknown:
            raise Invalid(f"{name} has unknown fields: {', '.join(sorted(unknown))[:200]}")
        for key, item in value.items():
            _check(f"{name}.{key}", spec["properties"][key], item)
        return
    raise Invalid(f"{name} must be {' or '.join(kinds)}")


def validate(values: dict[str, Any]) -> None:
    """Raise Invalid unless ``values`` (a stored or requested set) fits :data:`SCHEMA`."""
    unknown = set(values) - set(SCHEMA["properties"])
    if unknown:
        raise Invalid(f"unknown preferences: {', '.join(sorted(unknown))[:200]}")
    for name, value in values.items():
        _check(name, SCHEMA["properties"][name], value)


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7396 §2: members of ``patch`` replace ``target``'s, objects merge, null removes."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            current = out.get(key)
            out[key] = merge_patch(current if isinstance(current, dict) else {}, value)
        else:
            out[key] = value
    return out


def effective(stored: dict[str, Any]) -> dict[str, Any]:
    """Every preference: the stored value, else the default."""
    out = defaults()
    for name, value in stored.items():
        if name not in out:
            continue  # a preference a later release dropped
        out[name] = {**out[name], **value} if isinstance(value, dict) else value
    return out


async def get(pool: asyncpg.Pool, user_id: int) -> dict[str, Any]:
    return effective(await store.load(pool, user_id))


async def _own_address(pool: asyncpg.Pool, user_id: int, values: dict[str, Any]) -> dict[str, Any]:
    sender = values.get("defaultFrom")
    if not isinstance(sender, str):
        return values  # null, absent, or a wrong type that validate() names
    try:
        address = normalize_address(sender)
    except Invalid:
        raise Invalid("defaultFrom must be an email address") from None
    if address not in await accounts.user_addresses(pool, user_id):
        raise Invalid("defaultFrom must be one of your own addresses")
    return {**values, "defaultFrom": address}


async def replace(pool: asyncpg.Pool, user_id: int, values: dict[str, Any]) -> dict[str, Any]:
    """PUT: ``values`` become the stored set (validated first); the effective preferences."""
    validate(values)
    values = await _own_address(pool, user_id, {k: v for k, v in values.items() if v is not None})
    return effective(await store.update(pool, user_id, lambda _: values))


async def patch(pool: asyncpg.Pool, user_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    """PATCH (a JSON merge patch over the stored set); the effective preferences."""
    checked = await _own_address(pool, user_id, changes)

    def apply(stored: dict[str, Any]) -> dict[str, Any]:
        merged = merge_patch({k: v for k, v in stored.items() if k in SCHEMA["properties"]}, checked)
        validate(merged)  # raising here rolls the transaction back
        return merged

    return effective(await store.update(pool, user_id, apply))
