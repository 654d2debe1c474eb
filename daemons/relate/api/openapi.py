"""The OpenAPI 3.1 description of every route the API serves, at ``GET /api/openapi.json``.

Policy: this module is the one place the API is described; a route added to
any route module must be added here too (a test compares the running app's
router with this document, both ways). The document is public, like the
routes it lists: it names no user, key or host. Scopes are written as the
roles of the ``bearer`` scheme (OpenAPI 3.1 allows role names for any
scheme): ``api:read``, ``api:write`` (an ``app`` key holds both), and
``internal`` for the daemons' own calls.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from aiohttp import web

import relate

routes = web.RouteTableDef()

JSON = "application/json"

# --- building blocks ------------------------------------------------------------


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def obj(required: list[str] | None = None, /, **props: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


def array(items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **extra}


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
DATETIME = {"type": "string", "format": "date-time"}
EMAIL = {"type": "string", "format": "email"}


def page_of(item: str) -> dict[str, Any]:
    return {
        "allOf": [ref("Page"), obj(["items"], items=array(ref(item)))],
    }


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def error(description: str) -> dict[str, Any]:
    return {"description": description, "content": json_content(ref("Error"))}


_AUTH_ERRORS = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Forbidden"},
    "429": {"$ref": "#/components/responses/RateLimited"},
}


def op(
    summary: str,
    tag: str,
    ok: dict[str, Any],
    *,
    scope: str | None = None,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status: str = "200",
    description: str | None = None,
    key_management: bool = False,
) -> dict[str, Any]:
    """One operation; ``scope`` None means a public route."""
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": {status: ok}}
    if description:
        operation["description"] = description
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = {"required": True, "content": json_content(body)}
    if scope is None:
        operation["security"] = []
    else:
        operation["security"] = [{"bearer": [scope]}]
        operation["responses"] |= _AUTH_ERRORS
        if key_management:
            operation["x-rate-limit"] = "key management: api.key_calls_per_minute (10)"
    for code, text in (errors or {}).items():
        operation["responses"][code] = error(text)
    operation["responses"].setdefault("500", {"$ref": "#/components/responses/Internal"})
    return operation


def returns(description: str, schema: dict[str, Any] | None = None, media: str = JSON) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        response["content"] = {media: {"schema": schema}}
    return response


def path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": INTEGER}


def query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema or STRING}


PAGING = [{"$ref": "#/components/parameters/page"}, {"$ref": "#/components/parameters/pageSize"}]
EMAIL_ID = path_param("id", "the email's id (from a listing)")
KEY_ID = path_param("id", "the key's id")
OUTBOUND_ID = path_param("id", "the outbound email's id")
REPLY_TO_ID = path_param("emailId", "the received email answered or forwarded")

# --- schemas ---------------------------------------------------------------------

SERVER = obj(["port", "security"], port=INTEGER, security={"type": "string", "enum": ["tls", "starttls"]})
SERVERS = array(SERVER, description="preferred first; empty when the protocol is off")

SCHEMAS: dict[str, Any] = {
    "Error": obj(
        ["error", "message"],
        error={"type": "string", "description": "a stable code: bad_request, unauthorized, forbidden, not_found, ..."},
        message={"type": "string", "description": "for people; may change"},
    ),
    "Page": obj(
        ["items", "page", "pageSize", "total"],
        items={"type": "array"},
        page={"type": "integer", "minimum": 1},
        pageSize={"type": "integer", "minimum": 1},
        total={"type": "integer", "minimum": 0},
    ),
    "Person": obj(["email"], name=nullable("string"), email=nullable("string")),
    "Mailbox": obj(
        ["id", "name", "total", "unread"],
        id=INTEGER,
        name=STRING,
        specialUse=nullable("string", description="\\Sent, \\Drafts, \\Trash, \\Junk, \\Archive, ..."),
        subscribed=BOOLEAN,
        total=INTEGER,
        unread=INTEGER,
    ),
    "EmailSummary": obj(
        ["id", "mailboxId", "subject", "received", "size", "isRead", "flags", "attachmentCount"],
        id=INTEGER,
        mailboxId=INTEGER,
        **{"from": {"oneOf": [ref("Person"), {"type": "null"}]}},
        to=array(ref("Person")),
        subject=nullable("string"),
        received=DATETIME,
        date=nullable("string", format="date-time"),
        size=INTEGER,
        isRead=BOOLEAN,
        flags=array(STRING),
        attachmentCount=INTEGER,
    ),
    "Header": obj(["name", "value"], name=STRING, value=STRING),
    "Attachment": obj(
        ["index", "part"],
        index={"type": "integer", "description": "for /api/emails/{id}/attachments/{n}"},
        part=STRING,
        filename=nullable("string"),
        contentType=nullable("string"),
        size=nullable("integer"),
        contentId=nullable("string"),
        inline=BOOLEAN,
    ),
    "EmailDetail": {
        "allOf": [
            ref("EmailSummary"),
            obj(
                ["headers", "attachments"],
                mailboxName=STRING,
                cc=array(ref("Person")),
                bcc=array(ref("Person"), description="empty unless the user sent the message"),
                replyTo=array(ref("Person")),
                messageId=nullable("string"),
                inReplyTo=nullable("string"),
                references=array(STRING),
                headers=array(ref("Header"), description="every field in order; Bcc only when the user sent it"),
                textBody=nullable("string"),
                htmlBody=nullable("string", description="sanitised for display: no scripts or event handlers"),
                attachments=array(ref("Attachment")),
            ),
        ]
    },
    "EmailChange": {
        **obj(
            None,
            isRead=BOOLEAN,
            flags=array(STRING, maxItems=100, description="the complete new flag list (system flags and keywords)"),
            mailbox={"oneOf": [INTEGER, STRING], "description": "move to this mailbox (id or name)"},
        ),
        "additionalProperties": False,
    },
    "Deleted": obj(
        ["deleted", "id"],
        deleted={"type": "boolean", "description": "true: expunged (it was in Trash); false: moved to Trash"},
        id={"type": "integer", "description": "the message's id now (a move to Trash gives it a new one)"},
        mailboxId=INTEGER,
    ),
    "ConnectionSettings": obj(
        ["hostname", "username", "imap", "pop3", "smtp"],
        hostname=STRING,
        username={"type": "string", "description": "the user's address; the password is the key"},
        imap=SERVERS,
        pop3=SERVERS,
        smtp={**SERVERS, "description": "submission (465 implicit TLS, 587 STARTTLS), preferred first"},
    ),
    "Key": obj(
        ["id", "name", "prefix", "scopes", "createdAt"],
        id=INTEGER,
        name=STRING,
        prefix={"type": "string", "description": "the public part of the key, to tell keys apart"},
        scopes=array({"type": "string", "enum": ["smtp", "imap", "pop3", "api:read", "api:write", "app"]}),
        createdAt=DATETIME,
        lastUsedAt=nullable("string", format="date-time"),
        expiresAt=nullable("string", format="date-time"),
        expired=BOOLEAN,
        current={"type": "boolean", "description": "this is the key making the request"},
    ),
    "KeyRequest": {
        **obj(
            ["name", "scopes"],
            name={"type": "string", "minLength": 1, "maxLength": 100},
            scopes=array(
                {"type": "string", "enum": ["smtp", "imap", "pop3", "api:read", "api:write", "app"]},
                minItems=1,
                description="only scopes the calling key holds, unless it is an app key",
            ),
            expiresAt=nullable("string", format="date-time"),
        ),
        "additionalProperties": False,
    },
    "KeyCreated": {
        "allOf": [
            ref("Key"),
            obj(
                ["key", "settings"],
                key={"type": "string", "description": "the secret, shown only in this answer"},
                settings=ref("ConnectionSettings"),
            ),
        ]
    },
    "Profile": obj(
        ["id", "address", "aliases", "addresses"],
        id=INTEGER,
        address=EMAIL,
        displayName=nullable("string"),
        aliases=array(STRING),
        addresses=array(STRING, description="the primary address first, then the aliases"),
        key=obj(None, id=INTEGER, scopes=array(STRING), expiresAt=nullable("string", format="date-time")),
    ),
    "Discovery": obj(
        ["name", "version", "protocols", "features"],
        name=STRING,
        version=STRING,
        hostname=STRING,
        protocols={
            "type": "object",
            "additionalProperties": obj(["enabled", "ports"], enabled=BOOLEAN, ports=SERVERS),
        },
        features={"type": "object", "additionalProperties": BOOLEAN},
        endpoints={"type": "object", "additionalProperties": STRING},
    ),
    "Health": obj(
        ["status", "database"],
        status={"type": "string", "enum": ["ok", "unavailable"]},
        database={"type": "string", "enum": ["reachable", "unreachable"]},
        version=STRING,
        queue=obj(None, depth=INTEGER, queued=INTEGER, sending=INTEGER, held=INTEGER),
    ),
    # Outbound mail (drafts, the queue, sent mail).
    "Recipient": {
        "oneOf": [EMAIL, obj(["email"], email=EMAIL, name=nullable("string"))],
        "description": "an address, or a name and an address",
    },
    "OutboundAttachment": obj(
        ["filename", "content"],
        filename=STRING,
        contentType=STRING,
        content={"type": "string", "contentEncoding": "base64", "description": "the file, base64"},
        size={"type": "integer", "readOnly": True},
    ),
    "Draft": obj(
        None,
        **{"from": {"type": "string", "description": "one of the user's addresses (default: the primary)"}},
        to=array(ref("Recipient")),
        cc=array(ref("Recipient")),
        bcc=array(ref("Recipient")),
        subject=nullable("string"),
        textBody=nullable("string"),
        htmlBody=nullable("string"),
        attachments=array(
            ref("OutboundAttachment"), description="decoded sizes together at most api.max_attachment_size"
        ),
        inReplyTo=nullable("string"),
        references=array(STRING),
    ),
    "RecipientStatus": obj(
        ["address", "kind", "status"],
        address=STRING,
        kind={"type": "string", "enum": ["to", "cc", "bcc"]},
        status={"type": "string", "enum": ["pending", "sending", "sent", "deferred", "failed"]},
        attempts=INTEGER,
        lastError=nullable("string"),
        remoteReply=nullable("string"),
    ),
    "Outbound": {
        "allOf": [
            ref("Draft"),
            obj(
                ["id", "status"],
                id=INTEGER,
                status={
                    "type": "string",
                    "enum": ["draft", "queued", "sending", "sent", "partial_failure", "failed", "held"],
                },
                messageId=nullable("string"),
                recipients=array(ref("RecipientStatus")),
                retryCount=INTEGER,
                nextRetryAt=nullable("string", format="date-time"),
                lastError=nullable("string"),
                createdAt=DATETIME,
                updatedAt=DATETIME,
                queuedAt=nullable("string", format="date-time"),
                sentAt=nullable("string", format="date-time"),
            ),
        ]
    },
    "ReplyRequest": obj(
        None,
        replyAll={"type": "boolean", "description": "reply: to every recipient of the original too"},
        to=array(ref("Recipient"), description="forward: the recipients"),
        cc=array(ref("Recipient")),
        bcc=array(ref("Recipient")),
        textBody=nullable("string"),
        htmlBody=nullable("string"),
        attachments=array(ref("OutboundAttachment")),
        send={"type": "boolean", "description": "queue at once instead of saving a draft"},
    ),
    # Real time.
    "InternalNotification": obj(
        ["mailboxId", "emailId"],
        mailboxId=INTEGER,
        emailId=INTEGER,
        **{"from": nullable("string")},
        subject=nullable("string"),
    ),
    "HubEvent": obj(
        ["type", "data"],
        type={
            "type": "string",
            "enum": ["NewEmail", "EmailUpdated", "EmailDeleted", "UnreadCountChanged", "DeliveryStatusChanged"],
        },
        data={"type": "object", "description": "NewEmail: an EmailSummary; the others: ids and counts"},
    ),
    "VapidPublicKey": obj(["publicKey"], publicKey={"type": "string", "description": "base64url, raw P-256"}),
    "PushSubscriptionRequest": {
        "description": "what the browser's PushSubscription.toJSON() gives, or its three fields flat",
        "anyOf": [
            obj(
                ["endpoint", "keys"],
                endpoint={"type": "string", "format": "uri"},
                expirationTime=nullable("number"),
                keys=obj(["p256dh", "auth"], p256dh=STRING, auth=STRING),
            ),
            obj(
                ["endpoint", "p256dh", "auth"], endpoint={"type": "string", "format": "uri"}, p256dh=STRING, auth=STRING
            ),
        ],
    },
    "PushSubscription": obj(
        ["id", "endpoint"],
        id=INTEGER,
        endpoint={"type": "string", "format": "uri"},
        createdAt=DATETIME,
        lastUsedAt=nullable("string", format="date-time"),
    ),
}

RESPONSES = {
    "Unauthorized": error("no key, or a key that is unknown, revoked or expired"),
    "Forbidden": error("the key lacks the scope this route needs"),
    "RateLimited": {
        "description": "over a per-key limit; try again after Retry-After seconds",
        "headers": {"Retry-After": {"schema": INTEGER, "description": "seconds until a request will be accepted"}},
        "content": json_content(ref("Error")),
    },
    "Internal": error("an unexpected error (logged on the server)"),
}

PARAMETERS = {
    "page": {
        "name": "page",
        "in": "query",
        "required": False,
        "description": "1-based page number",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000000, "default": 1},
    },
    "pageSize": {
        "name": "pageSize",
        "in": "query",
        "required": False,
        "description": "items per page (api.max_page_size, 100 by default, at most)",
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
    },
}

# --- paths --------------------------------------------------------------------------

MAIL, OUTBOUND, KEYS, REALTIME, META = "mail", "outbound", "keys", "real time", "server"
R, W, INTERNAL = "api:read", "api:write", "internal"

_outbound_list = returns("one page, newest first", page_of("Outbound"))

PATHS: dict[str, dict[str, Any]] = {
    # Folders and mail (mail.py).
    "/api/mailboxes": {
        "get": op(
            "The user's folders with message and unread counts",
            MAIL,
            returns("INBOX first, then by name", obj(["items", "total"], items=array(ref("Mailbox")), total=INTEGER)),
            scope=R,
        )
    },
    "/api/emails": {
        "get": op(
            "One page of a folder, newest first",
            MAIL,
            returns("the page and the folder's total", page_of("EmailSummary")),
            scope=R,
            params=[query("mailbox", "folder id or name (default INBOX)"), *PAGING],
            errors={"400": "bad paging parameters", "404": "no such folder"},
        )
    },
    "/api/emails/search": {
        "get": op(
            "Full-text search over headers and bodies, with filters",
            MAIL,
            returns("best matches first", page_of("EmailSummary")),
            scope=R,
            params=[
                query(
                    "q",
                    "words to look for (web search syntax: quotes, OR, -word)",
                    {"type": "string", "maxLength": 1000},
                ),
                query("mailbox", "only this folder (id or name)"),
                query("from", "a substring of the sender's address or name"),
                query("to", "a substring of a To or Cc address or name"),
                query("after", "received at or after (ISO 8601)", {"type": "string", "format": "date-time"}),
                query("before", "received before (ISO 8601)", {"type": "string", "format": "date-time"}),
                query("hasAttachments", "true or false", BOOLEAN),
                query("isRead", "true or false", BOOLEAN),
                *PAGING,
            ],
            errors={"400": "a bad parameter", "404": "no such folder"},
        )
    },
    "/api/emails/{id}": {
        "get": op(
            "One email: headers, text and sanitised HTML bodies, recipients, attachments",
            MAIL,
            returns("the email", ref("EmailDetail")),
            scope=R,
            params=[EMAIL_ID],
            errors={"404": "no such email (or another user's)"},
        ),
        "patch": op(
            "Mark read or unread, set flags, or move to another folder",
            MAIL,
            returns("the email as it is now (a move gives it a new id)", ref("EmailSummary")),
            scope=W,
            params=[EMAIL_ID],
            body=ref("EmailChange"),
            errors={"400": "not JSON", "404": "no such email or folder", "415": "not JSON", "422": "a bad field"},
        ),
        "delete": op(
            "Move to Trash; from Trash, delete for good",
            MAIL,
            returns("what happened", ref("Deleted")),
            scope=W,
            params=[EMAIL_ID],
            errors={"404": "no such email"},
        ),
    },
    "/api/emails/{id}/raw": {
        "get": op(
            "The message exactly as received (RFC 5322 bytes)",
            MAIL,
            returns("the raw message", {"type": "string"}, "message/rfc822"),
            scope=R,
            params=[EMAIL_ID],
            errors={"404": "no such email"},
        )
    },
    "/api/emails/{id}/attachments/{n}": {
        "get": op(
            "One attachment's content, decoded",
            MAIL,
            returns("the file (Content-Disposition: attachment)", {"type": "string", "format": "binary"}, "*/*"),
            scope=R,
            params=[
                EMAIL_ID,
                {
                    **path_param("n", "the attachment's index in the email's attachments"),
                    "schema": {"type": "integer", "minimum": 0},
                },
            ],
            errors={"404": "no such email or attachment"},
        )
    },
    # Outbound mail.
    "/api/outbound": {
        "post": op(
            "Create a draft",
            OUTBOUND,
            returns("the draft", ref("Outbound")),
            status="201",
            scope=W,
            body=ref("Draft"),
            errors={"400": "not JSON", "413": "attachments too large", "422": "a bad field"},
        )
    },
    "/api/outbound/{id}": {
        "get": op(
            "A draft or sent email, with each recipient's delivery status and last error",
            OUTBOUND,
            returns("the outbound email", ref("Outbound")),
            scope=R,
            params=[OUTBOUND_ID],
            errors={"404": "no such outbound email"},
        ),
        "put": op(
            "Save a draft (auto-save): replaces its fields",
            OUTBOUND,
            returns("the draft", ref("Outbound")),
            scope=W,
            params=[OUTBOUND_ID],
            body=ref("Draft"),
            errors={
                "404": "no such draft",
                "409": "no longer a draft",
                "413": "attachments too large",
                "422": "a bad field",
            },
        ),
        "delete": op(
            "Discard a draft",
            OUTBOUND,
            returns("discarded", obj(["deleted"], deleted=BOOLEAN, id=INTEGER)),
            scope=W,
            params=[OUTBOUND_ID],
            errors={"404": "no such draft", "409": "no longer a draft"},
        ),
    },
    "/api/outbound/{id}/send": {
        "post": op(
            "Validate a draft and queue it for delivery",
            OUTBOUND,
            returns("queued", ref("Outbound")),
            scope=W,
            params=[OUTBOUND_ID],
            errors={
                "404": "no such draft",
                "409": "no longer a draft",
                "422": "not sendable (From, 1 to 100 recipients)",
            },
        )
    },
    "/api/outbound/send": {
        "post": op(
            "Validate and queue a new email in one step",
            OUTBOUND,
            returns("queued", ref("Outbound")),
            status="201",
            scope=W,
            body=ref("Draft"),
            errors={"400": "not JSON", "413": "attachments too large", "422": "not sendable"},
        )
    },
    "/api/outbound/reply/{emailId}": {
        "post": op(
            "Start a reply to a received email (threading headers set)",
            OUTBOUND,
            returns("the reply (a draft, or queued with send)", ref("Outbound")),
            status="201",
            scope=W,
            params=[REPLY_TO_ID],
            body=ref("ReplyRequest"),
            errors={"404": "no such email", "422": "a bad field"},
        )
    },
    "/api/outbound/forward/{emailId}": {
        "post": op(
            "Start a forward of a received email (its attachments kept)",
            OUTBOUND,
            returns("the forward (a draft, or queued with send)", ref("Outbound")),
            status="201",
            scope=W,
            params=[REPLY_TO_ID],
            body=ref("ReplyRequest"),
            errors={"404": "no such email", "422": "a bad field"},
        )
    },
    "/api/outbound/drafts": {
        "get": op("The user's drafts", OUTBOUND, _outbound_list, scope=R, params=PAGING, errors={"400": "bad paging"})
    },
    "/api/outbound/outbox": {
        "get": op(
            "Mail waiting for delivery (queued, sending)",
            OUTBOUND,
            _outbound_list,
            scope=R,
            params=PAGING,
            errors={"400": "bad paging"},
        )
    },
    "/api/outbound/sent": {
        "get": op(
            "Mail delivered or given up on (sent, partly failed, failed)",
            OUTBOUND,
            _outbound_list,
            scope=R,
            params=PAGING,
            errors={"400": "bad paging"},
        )
    },
    # Keys (keys.py).
    "/api/smtp-credentials": {
        "get": op(
            "The user's keys (app passwords) that are not revoked",
            KEYS,
            returns("never a secret or a hash", obj(["items", "total"], items=array(ref("Key")), total=INTEGER)),
            scope=R,
            key_management=True,
        ),
        "post": op(
            "Create a key; the secret is shown once, with the settings for mail clients",
            KEYS,
            returns("the new key", ref("KeyCreated")),
            status="201",
            scope=W,
            body=ref("KeyRequest"),
            errors={"400": "not JSON", "403": "a scope the calling key lacks", "422": "a bad field"},
            key_management=True,
        ),
    },
    "/api/smtp-credentials/{id}": {
        "delete": op(
            "Revoke one of the user's keys (it stops working at once)",
            KEYS,
            returns("revoked", obj(["revoked", "id"], revoked=BOOLEAN, id=INTEGER)),
            scope=W,
            params=[KEY_ID],
            errors={"404": "no such key (or already revoked, or another user's)"},
            key_management=True,
        )
    },
    "/api/smtp-credentials/{id}/rotate": {
        "post": op(
            "Replace a key's secret: a new key with the same name and scopes; the old one is revoked",
            KEYS,
            returns("the new key", ref("KeyCreated")),
            status="201",
            scope=W,
            params=[KEY_ID],
            errors={"403": "the key has scopes the calling key lacks", "404": "no such key"},
            key_management=True,
        )
    },
    # Real time.
    "/api/internal-notifications": {
        "post": op(
            "A daemon stored new mail: fan it out to the hub and web push",
            REALTIME,
            returns("accepted", obj(["accepted"], accepted=BOOLEAN)),
            status="202",
            scope=INTERNAL,
            body=ref("InternalNotification"),
            errors={
                "400": "not JSON",
                "404": "no such email, or over HTTP while api.internal_over_http is off",
                "422": "a bad field",
            },
            description="Unix socket (internal.api_socket) always; HTTP only with api.internal_over_http.",
        )
    },
    "/hubs/email": {
        "get": {
            **op(
                "WebSocket: the user's mail events as JSON {type, data}",
                REALTIME,
                returns("switching to WebSocket; each text message is a HubEvent", ref("HubEvent")),
                status="101",
                scope=R,
                description=(
                    "Open with Upgrade: websocket. Browsers that cannot set headers pass the key as the "
                    "access_token query parameter. Events: NewEmail, EmailUpdated, EmailDeleted, "
                    "UnreadCountChanged, DeliveryStatusChanged; only the user's own."
                ),
                errors={"400": "not a WebSocket upgrade"},
            ),
            "security": [{"bearer": [R]}, {"accessToken": [R]}],
        }
    },
    "/api/push-subscriptions/vapid-public-key": {
        "get": op(
            "The server's VAPID public key, for PushManager.subscribe()",
            REALTIME,
            returns("the key", ref("VapidPublicKey")),
            errors={"503": "web push is not configured (push.vapid_*)"},
        )
    },
    "/api/push-subscriptions": {
        "get": op(
            "The user's web push subscriptions",
            REALTIME,
            returns("every subscription", obj(["items", "total"], items=array(ref("PushSubscription")), total=INTEGER)),
            scope=R,
        ),
        "post": {
            **op(
                "Subscribe a browser to web push (idempotent per endpoint)",
                REALTIME,
                returns("a new subscription", ref("PushSubscription")),
                status="201",
                scope=W,
                body=ref("PushSubscriptionRequest"),
                errors={
                    "400": "not JSON",
                    "422": "a bad field (endpoint must be https; p256dh a P-256 point; auth 16 bytes)",
                    "503": "web push is not configured",
                },
            ),
        },
    },
    "/api/push-subscriptions/{id}": {
        "delete": op(
            "Unsubscribe",
            REALTIME,
            returns("deleted", obj(["deleted"], deleted=BOOLEAN, id=INTEGER)),
            scope=W,
            params=[path_param("id", "the subscription's id")],
            errors={"404": "no such subscription"},
        )
    },
    # The server (meta.py, this module).
    "/api/profile": {
        "get": op(
            "Who the key belongs to: addresses, display name, the key's scopes",
            META,
            returns("the profile", ref("Profile")),
            scope=R,
        )
    },
    "/api/discovery": {
        "get": op(
            "Version, protocols with their ports, features",
            META,
            returns("what this server offers", ref("Discovery")),
        )
    },
    "/healthz": {
        "get": op(
            "Whether the database is reachable, and the outbound queue's depth",
            META,
            returns("healthy", ref("Health")),
            errors={"503": "the database is unreachable (body: Health with status unavailable)"},
        )
    },
    "/api/openapi.json": {"get": op("This document", META, returns("OpenAPI 3.1", {"type": "object"}))},
}

_AUTOCONFIG = op(
    "Thunderbird autoconfiguration (Mozilla ISPDB clientConfig 1.1) for a hosted domain",
    META,
    returns("IMAP, POP3 and SMTP servers; username %EMAILADDRESS%", {"type": "string"}, "application/xml"),
    params=[{**query("emailaddress", "the address being set up", EMAIL), "required": True}],
    errors={"400": "no or a bad emailaddress", "404": "the domain is not hosted here"},
)
PATHS["/api/push-subscriptions"]["post"]["responses"]["200"] = returns(
    "the endpoint was already subscribed (keys updated)", ref("PushSubscription")
)
PATHS["/.well-known/autoconfig/mail/config-v1.1.xml"] = {"get": _AUTOCONFIG}
PATHS["/mail/config-v1.1.xml"] = {"get": copy.deepcopy(_AUTOCONFIG)}


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (a fresh copy)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Relate Mail API",
            "version": relate.__version__,
            "description": (
                "REST API of Relate Mail for web, desktop and mobile apps. Authenticate with an API key: "
                "`Authorization: Bearer KEY` (or `ApiKey KEY`). Lists are paginated "
                "(`page`, `pageSize`; answers carry `items`, `page`, `pageSize`, `total`). Errors are "
                '`{"error": code, "message": text}`. Per-key limits per minute: requests, writes, and '
                "key management; over one: 429 with Retry-After."
            ),
            "license": {"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"},
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": name} for name in (MAIL, OUTBOUND, KEYS, REALTIME, META)],
        "security": [{"bearer": []}],
        "paths": copy.deepcopy(PATHS),
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "responses": copy.deepcopy(RESPONSES),
            "parameters": copy.deepcopy(PARAMETERS),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key (relate_<prefix>_<secret>); roles are the scopes a route needs",
                },
                "accessToken": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "access_token",
                    "description": "the same key, for browsers opening the WebSocket hub (only under /hubs/)",
                },
            },
        },
    }


@functools.cache
def _encoded() -> bytes:
    return json.dumps(document(), separators=(",", ":")).encode()


@routes.get("/api/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_encoded(), content_type=JSON, headers={"Cache-Control": "max-age=300"})
