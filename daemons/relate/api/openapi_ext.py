"""The OpenAPI description of the routes added with issue 17's apps features: preferences, export, the
reference pages; merged into the document by :func:`relate.api.openapi.document`.

Kept apart from openapi.py so the two halves of issue 17 (the route restructuring and these features) do
not edit one 1,300-line file at once; the same policy holds: every route here is served, and the
router-versus-document test covers both modules.
"""

from __future__ import annotations

from typing import Any

from relate.api.openapi import (
    _JSON_ERRORS,
    R,
    W,
    op,
    ref,
    returns,
)
from relate.services import preferences

PREFERENCES = "preferences"
TAGS = [PREFERENCES]

SCHEMAS: dict[str, Any] = {
    "Preferences": {
        **preferences.SCHEMA,
        "required": list(preferences.SCHEMA["properties"]),
        "description": "every preference, with its default where the user set none",
    },
    "PreferencesChange": {
        **{k: v for k, v in preferences.SCHEMA.items() if k != "properties"},
        "properties": {
            name: ({**spec, "type": [spec["type"], "null"]} if isinstance(spec["type"], str) else spec)
            for name, spec in preferences.SCHEMA["properties"].items()
        },
        "description": "some or all preferences; null (or, for PUT, leaving one out) returns it to its default",
    },
}

_PREFS_ERRORS: dict[str, str | dict[str, Any]] = {
    **_JSON_ERRORS,
    "422": "an unknown preference, a wrong type, a value out of bounds, or a defaultFrom not the user's",
}


def _prefs_write(summary: str) -> dict[str, Any]:
    answer = returns("every preference, as stored", ref("Preferences"))
    return op(summary, PREFERENCES, answer, scope=W, body=ref("PreferencesChange"), errors=_PREFS_ERRORS)


PATHS: dict[str, dict[str, Any]] = {
    "/api/preferences": {
        "get": op("The user's preferences", PREFERENCES, returns("every preference", ref("Preferences")), scope=R),
        "put": _prefs_write("Replace the user's preferences (those left out return to their defaults)"),
        "patch": _prefs_write("Change some preferences (JSON merge patch, RFC 7396: null returns one to its default)"),
    },
}
