"""The OpenAPI description of the routes added with issue 17's apps features: preferences, export, the
reference pages; merged into the document by :func:`relate.api.openapi.document`.

Kept apart from openapi.py so the two halves of issue 17 (the route restructuring and these features) do
not edit one 1,300-line file at once; the same policy holds: every route here is served, and the
router-versus-document test covers both modules.
"""

from __future__ import annotations

from typing import Any

from relate.api.openapi import _JSON_ERRORS, EMAIL_ID, MAIL, META, R, W, op, query, ref, returns
from relate.services import preferences

PREFERENCES, EXPORT = "preferences", "export"
TAGS = [PREFERENCES, EXPORT]

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
    "/api/emails/{id}/eml": {
        "get": op(
            "The message as an .eml file to save (the raw RFC 5322 bytes, Content-Disposition: attachment)",
            EXPORT,
            returns("the message, named email-ID.eml", {"type": "string"}, "message/rfc822"),
            scope=R,
            params=[EMAIL_ID],
            errors={"404": "no such email"},
        )
    },
    "/api/emails/{id}/cid/{cid}": {
        "get": op(
            "A part of the message by its Content-ID (RFC 2392 cid: URL), for the images its HTML shows",
            MAIL,
            returns("the part: images inline, anything else as a download", {"type": "string"}, "*/*"),
            scope=R,
            params=[
                EMAIL_ID,
                {**query("cid", "the Content-ID, without angle brackets"), "in": "path", "required": True},
            ],
            errors={"404": "no such email, or no part with that Content-ID"},
        )
    },
    "/api/export/mbox": {
        "get": op(
            "A folder, a search, or the whole account as one MBOX file (mboxrd), streamed",
            EXPORT,
            returns(
                "mboxrd: each message after a From_ line, LF line ends, >From escaping; folder by folder in "
                "UID order. Chunked: a body that ends without the final chunk is an export that failed",
                {"type": "string"},
                "application/mbox",
            ),
            scope=R,
            params=[
                query("mailbox", "only this folder (id or name); none: every folder"),
                query("q", 'full-text search (words, "phrases", -exclusions, OR), as /api/emails/search'),
                query("from", "a substring of the sender's address or name"),
                query("after", "received at or after (ISO 8601)", {"type": "string", "format": "date-time"}),
                query("before", "received before (ISO 8601)", {"type": "string", "format": "date-time"}),
            ],
            errors={
                "400": "a bad date, a q or from over 1000 characters, or a parameter with NUL",
                "404": "no such mailbox",
                "429": {
                    "description": "over api.exports_per_hour, an export of this account already running, or the "
                    "server's exports at their limit; try again after Retry-After seconds",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": {"application/json": {"schema": ref("Error")}},
                },
            },
        )
    },
    "/api/docs": {
        "get": op(
            "This document as a page for people (generated from it; self-contained, no scripts)",
            META,
            returns("the reference", {"type": "string"}, "text/html"),
        )
    },
}
