"""The OpenAPI 3.1 description of every route the API serves, at ``GET /api/openapi.json``.

Policy: this module is the one place the API is described; a route added to any route module must be
added here too (a test compares the running app's router with this document, both ways). The document
is public, like the routes it lists: it names no user, key or host. Scopes are written as the roles of
the ``bearer`` scheme (OpenAPI 3.1 allows role names for any scheme): ``api:read``, ``api:write`` (an
``app`` key holds both), and ``internal`` for the daemons' own calls.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from aiohttp import web

import relate
from relate.services import preferences

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


# Sending over the user's daily sending limit (submission.limits; SMTP submission's 451 4.7.0).
_SENDING_LIMIT = {
    "description": (
        "over a per-key limit, or over the user's daily sending limit (error sending_limit: messages or "
        "first-time recipients in 24 hours); nothing was sent, try again after Retry-After seconds"
    ),
    "headers": {"Retry-After": {"schema": INTEGER, "description": "seconds until sending may work"}},
    "content": json_content(ref("Error")),
}


def op(
    summary: str,
    tag: str,
    ok: dict[str, Any],
    *,
    scope: str | None = None,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    body_required: bool = True,
    errors: dict[str, str | dict[str, Any]] | None = None,
    status: str = "200",
    more: dict[str, dict[str, Any]] | None = None,
    description: str | None = None,
    key_management: bool = False,
) -> dict[str, Any]:
    """One operation; ``scope`` None means a public route; ``more``: other successful answers.

    ``errors`` maps a status to a description (the answer is an Error) or to a whole response.
    """
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": {status: ok, **(more or {})}}
    if description:
        operation["description"] = description
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": json_content(body)}
    if scope is None:
        operation["security"] = []
    else:
        operation["security"] = [{"bearer": [scope]}]
        # The internal key is checked on its own: no user scopes (403) and no per-key limits (429).
        operation["responses"] |= {"401": _AUTH_ERRORS["401"]} if scope == "internal" else _AUTH_ERRORS
        # Authenticating reads the database (then cached): any authenticated route may find it down.
        operation["responses"]["503"] = {"$ref": "#/components/responses/Unavailable"}
        if key_management:
            operation["x-rate-limit"] = "key management: api.key_calls_per_minute (10)"
    for code, text in (errors or {}).items():
        operation["responses"][code] = error(text) if isinstance(text, str) else text
    # What every route answers to input no handler could use (app.py and jsonbody.py).
    if body is not None:
        operation["responses"].setdefault("400", error(_BAD_BODY))
        operation["responses"].setdefault("413", error(_BODY_TOO_LARGE))
        operation["responses"].setdefault("415", error("the body is not application/json"))
    operation["responses"].setdefault("400", error("a query or path parameter holds NUL or a lone surrogate"))
    operation["responses"].setdefault("500", {"$ref": "#/components/responses/Internal"})
    return operation


_BAD_BODY = (
    "the body is not a JSON object, nests deeper than api.max_json_depth, or holds NUL or a lone surrogate;"
    " or a parameter holds NUL or a lone surrogate"
)
_BODY_TOO_LARGE = "the body is over api.max_body_size or holds more than api.max_json_items values (too_large)"


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
MAILBOX_ID = path_param("id", "the folder's id")
KEY_ID = path_param("id", "the key's id")
KEY_SELF = query("self", "true to revoke or rotate the calling key itself (409 otherwise)", BOOLEAN)
OUTBOUND_ID = path_param("id", "the outbound email's id")
REPLY_TO_ID = path_param("emailId", "the received email answered or forwarded")
LABEL_ID = path_param("id", "the label's id")
LABEL_FILTER = query("label", "only emails with this label (its id)", {"type": "string", "pattern": "^[0-9]{1,19}$"})

# --- schemas ---------------------------------------------------------------------

SERVER = obj(["port", "security"], port=INTEGER, security={"type": "string", "enum": ["tls", "starttls"]})
SERVERS = array(SERVER, description="preferred first; empty when the protocol is off")

_POSITIVE = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
_OUTBOUND_STATUS = {
    "type": "string",
    "enum": ["draft", "queued", "sending", "sent", "partial_failure", "failed", "held"],
    "description": "held: stopped by the administrator (relatectl queue hold)",
}
_RECIPIENT_KIND = {"type": "string", "enum": ["to", "cc", "bcc"]}
_RECIPIENT_STATUS = {
    "type": ["string", "null"],
    "enum": ["pending", "sending", "sent", "deferred", "failed", None],
    "description": "null while the email is a draft",
}
# The fields a draft is written with (create, save, send at once; reply and forward bodies too).
_DRAFT_FIELDS: dict[str, Any] = {
    "from": {
        **ref("AddressInput"),
        "description": "one of the user's addresses (primary or alias); default: the primary, with the display name",
    },
    "to": array(ref("AddressInput"), maxItems=100),
    "cc": array(ref("AddressInput"), maxItems=100),
    "bcc": array(ref("AddressInput"), maxItems=100, description="in the Sent copy, never in what recipients get"),
    "subject": nullable("string", maxLength=998, description="one line"),
    "textBody": nullable("string"),
    "htmlBody": nullable("string"),
    "inReplyTo": nullable("string", description="a message id, <id@host>"),
    "references": array(STRING, maxItems=100, description="message ids, <id@host>"),
    "attachments": array(
        {"oneOf": [ref("NewAttachment"), ref("KeptAttachment")]},
        maxItems=100,
        description="new ones with content; in a PUT, {id} keeps one the draft has (those not listed are dropped)",
    ),
}


def _event(kind: str, data: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        **obj(["type", "data"], type={"const": kind}, data=data),
        "additionalProperties": False,
        "description": description,
    }


SCHEMAS: dict[str, Any] = {
    "Error": obj(
        ["error", "message"],
        error={
            "type": "string",
            "description": (
                "a stable code: bad_request, unauthorized, forbidden, not_found, conflict, too_large, "
                "unsupported_media_type, invalid, rate_limited, push_not_configured, unavailable, internal"
            ),
        },
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
        labels=array(
            INTEGER,
            description="the ids of the user's labels among flags (REST answers; hub events carry flags only)",
        ),
    ),
    "Header": obj(["name", "value"], name=STRING, value=STRING),
    "AuthResult": obj(
        ["method", "result", "properties"],
        method={"type": "string", "description": "spf, dkim, arc, dmarc or auth (RFC 8601)"},
        result={"type": "string", "description": "pass, fail, softfail, neutral, none, temperror, permerror"},
        reason=nullable("string"),
        properties={
            "type": "object",
            "additionalProperties": STRING,
            "description": "smtp.mailfrom, smtp.helo, smtp.auth, header.d, header.s, header.a, header.b, header.from",
        },
    ),
    "Authentication": obj(
        ["authservId", "spf", "dkim", "dmarc", "results"],
        authservId=STRING,
        spf=nullable("string", description="the MAIL FROM identity's SPF result"),
        dkim=nullable("string", description="pass when any signature passed, else the first signature's result"),
        dmarc=nullable("string"),
        arc=nullable("string", description="the ARC chain (RFC 8617): pass, fail, or none when it had no ARC sets"),
        auth=nullable("string", description="pass: sent by an authenticated user of this host"),
        results=array(ref("AuthResult"), description="every result, in the header's order"),
    ),
    "Spam": obj(
        ["spam", "symbols"],
        spam={"type": "boolean", "description": "rspamd's action was other than no action"},
        score=nullable("number"),
        required=nullable("number", description="the score of rspamd's reject action"),
        action=nullable(
            "string", description="reject, soft reject, rewrite subject, add header, greylist or no action"
        ),
        skipped=nullable(
            "string",
            description="why rspamd was not asked: submission, sender-lists, too-big ..., unreachable",
        ),
        symbols=array(obj(["name", "score"], name=STRING, score={"type": "number"})),
    ),
    "SenderRule": obj(
        ["id", "pattern", "kind", "createdAt"],
        id=INTEGER,
        pattern={"type": "string", "description": "an address, or a domain (its subdomains too)"},
        kind={"enum": ["allow", "block"]},
        createdAt={"type": "string", "format": "date-time"},
    ),
    "SenderRuleRequest": {
        **obj(
            ["pattern", "kind"],
            pattern={"type": "string", "description": "an address or a domain"},
            kind={"enum": ["allow", "block"]},
        ),
        "additionalProperties": False,
    },
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
                htmlBody=nullable(
                    "string",
                    description="sanitised for display: no scripts or event handlers; remote images have "
                    "data-remote-src instead of src unless remoteContent=allow; cid: images point at "
                    "/api/emails/{id}/cid/{cid}",
                ),
                remoteContentBlocked={
                    "type": "integer",
                    "description": "remote images and fetching style declarations taken out of htmlBody",
                },
                attachments=array(ref("Attachment")),
                authentication={
                    "oneOf": [ref("Authentication"), {"type": "null"}],
                    "description": "SPF, DKIM, ARC and DMARC as checked on arrival (our Authentication-Results); "
                    "null for mail that did not arrive over SMTP",
                },
                spam={
                    "oneOf": [ref("Spam"), {"type": "null"}],
                    "description": "rspamd's verdict on arrival (our X-Spam-* fields); null when the spam "
                    "filter did not look at the message",
                },
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
    "MailboxRequest": {
        **obj(
            ["name"],
            name={"type": "string", "description": "the full name, levels joined by '/' (Projects/2026)"},
            specialUse={
                "oneOf": [
                    {
                        "type": "string",
                        "enum": ["\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash", "\\All", "\\Flagged"],
                    },
                    {"type": "null"},
                ],
                "description": "RFC 6154 special use, once per user",
            },
        ),
        "additionalProperties": False,
    },
    "MailboxRename": {
        **obj(["name"], name={"type": "string", "description": "the new full name; folders below follow"}),
        "additionalProperties": False,
    },
    "MailboxDeleted": obj(["deleted", "id"], deleted={"const": True}, id=INTEGER),
    "BulkRequest": {
        **obj(
            ["action"],
            action={
                "type": "string",
                "enum": ["markRead", "markUnread", "flag", "unflag", "move", "delete", "label", "unlabel"],
            },
            ids=array(_POSITIVE, minItems=1, maxItems=1000, description="the emails (give ids or query)"),
            query={
                **obj(
                    None,
                    q={"type": "string", "maxLength": 1000},
                    mailbox={"oneOf": [INTEGER, STRING], "description": "only this folder (id or name)"},
                    **{"from": {"type": "string", "maxLength": 1000}, "to": {"type": "string", "maxLength": 1000}},
                    after={"type": "string", "format": "date-time"},
                    before={"type": "string", "format": "date-time"},
                    hasAttachments=nullable("boolean"),
                    isRead=nullable("boolean"),
                    label={**_POSITIVE, "description": "only emails with this label (its id)"},
                ),
                "additionalProperties": False,
                "description": "the emails a search finds (as GET /api/emails/search; at most 1000 matches)",
            },
            mailbox={"oneOf": [INTEGER, STRING], "description": "move: the target folder (id or name)"},
            label={**_POSITIVE, "description": "label, unlabel: the label's id"},
        ),
        "additionalProperties": False,
    },
    "BulkResult": obj(
        ["action", "count", "ids", "notFound", "mailboxId", "removed"],
        action=STRING,
        count={"type": "integer", "description": "emails the action applied to"},
        ids=array(INTEGER, description="those emails (their ids do not change, moved or not)"),
        notFound=array(INTEGER, description="ids asked for that are not the user's emails"),
        mailboxId=nullable("integer", description="move, delete: the folder they are in now (the target, Trash)"),
        removed=array(INTEGER, description="delete: emails removed for good (they were in Trash)"),
    ),
    "Deleted": obj(
        ["deleted", "id"],
        deleted={"type": "boolean", "description": "true: expunged (it was in Trash); false: moved to Trash"},
        id={"type": "integer", "description": "the message's id (the same in Trash: a move keeps it)"},
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
        quota=ref("Quota"),
    ),
    "Quota": obj(
        ["storage", "messages", "full", "fullSince"],
        storage=obj(
            ["used", "limit"],
            used={"type": "integer", "description": "bytes of the user's messages, every folder"},
            limit=nullable("integer", description="bytes; null: no limit"),
        ),
        messages=obj(
            ["used", "limit"],
            used={"type": "integer", "description": "the user's messages, every folder"},
            limit=nullable("integer", description="null: no limit"),
        ),
        full={"type": "boolean", "description": "a limit is reached: new mail waits (452 4.2.2) or bounces"},
        fullSince=nullable(
            "string",
            format="date-time",
            description="when mail was first refused for the full mailbox; quota.bounce_after_days counts from it",
        ),
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
    # Outbound mail (outbound.py): drafts, the queue, sent mail.
    "AddressInput": {
        "description": 'an address, "Name <address>", or a name and an address',
        "oneOf": [
            {"type": "string", "maxLength": 600, "examples": ["bob@example.com", "Bob <bob@example.com>"]},
            {
                **obj(["email"], email={"type": "string", "maxLength": 320}, name=nullable("string", maxLength=200)),
                "additionalProperties": False,
            },
        ],
    },
    "NamedAddress": obj(["email", "name"], email=STRING, name=nullable("string")),
    "NewAttachment": {
        **obj(
            ["filename", "content"],
            filename={"type": "string", "minLength": 1, "maxLength": 255},
            contentType={
                "type": "string",
                "default": "application/octet-stream",
                "description": "a MIME type such as application/pdf; not multipart",
            },
            content={"type": "string", "contentEncoding": "base64", "description": "the file, base64"},
            contentId={"type": "string", "description": "for inline images referenced as cid: in htmlBody"},
            inline={"type": "boolean", "default": False},
        ),
        "additionalProperties": False,
    },
    "KeptAttachment": {
        **obj(["id"], id={"type": "integer", "description": "an attachment the draft already has"}),
        "additionalProperties": False,
    },
    "DraftRequest": {
        **obj(None, **_DRAFT_FIELDS),
        "additionalProperties": False,
        "description": (
            "Every field is optional. A PUT replaces the fields it names and keeps the others; its attachments "
            "list what the draft keeps ({id}) and adds (content), and a draft's attachments together may hold "
            "api.max_attachment_size decoded bytes (25 MiB by default). Addresses are checked when saved; "
            "sending also needs 1 to 100 recipients (to, cc and bcc together), each local one existing."
        ),
    },
    "ReplyRequest": {
        **obj(
            None,
            **_DRAFT_FIELDS
            | {"attachments": array(ref("NewAttachment"), maxItems=100, description="new ones, with content")},
            replyAll={"type": "boolean", "default": False, "description": "to every recipient of the original too"},
            send={"type": "boolean", "default": False, "description": "send at once instead of saving a draft"},
        ),
        "additionalProperties": False,
        "description": "optional: fields given replace what the reply starts with (Re: subject, quoted original)",
    },
    "ForwardRequest": {
        **obj(
            None,
            **_DRAFT_FIELDS
            | {"attachments": array(ref("NewAttachment"), maxItems=100, description="added to the forwarded ones")},
            send={"type": "boolean", "default": False, "description": "send at once instead of saving a draft"},
        ),
        "additionalProperties": False,
        "description": "optional: fields given replace what the forward starts with (Fwd: subject, the original)",
    },
    "OutboundAttachment": obj(
        ["id", "filename", "contentType", "size", "contentId", "inline"],
        id=nullable("integer", description="a draft's: give {id} in a PUT's attachments to keep it; null once sent"),
        filename=nullable("string", description="null only once sent, for an attachment of the Sent copy without one"),
        contentType=nullable("string"),
        size=nullable("integer", description="bytes, decoded"),
        contentId=nullable("string"),
        inline=BOOLEAN,
    ),
    "RecipientStatus": obj(
        [
            "address",
            "kind",
            "name",
            "status",
            "attempts",
            "statusCode",
            "lastError",
            "remoteReply",
            "remoteMta",
            "nextAttemptAt",
            "updatedAt",
        ],
        address=STRING,
        kind=_RECIPIENT_KIND,
        name=nullable("string"),
        status=_RECIPIENT_STATUS,
        attempts={"type": "integer", "description": "delivery attempts so far"},
        statusCode=nullable("string", description="the enhanced status code of the last outcome, e.g. 5.1.1"),
        lastError=nullable("string"),
        remoteReply=nullable("string", description="what the receiving server last said"),
        remoteMta=nullable("string", description="the host that answered"),
        nextAttemptAt=nullable("string", format="date-time"),
        updatedAt=DATETIME,
    ),
    "Outbound": obj(
        [
            "id",
            "status",
            "from",
            "to",
            "cc",
            "bcc",
            "recipients",
            "subject",
            "textBody",
            "htmlBody",
            "messageId",
            "inReplyTo",
            "references",
            "attachments",
            "createdAt",
            "updatedAt",
            "queuedAt",
            "sentAt",
            "nextRetryAt",
            "retryCount",
            "lastError",
            "draftEmailId",
            "sentEmailId",
        ],
        id=INTEGER,
        status=_OUTBOUND_STATUS,
        **{"from": ref("NamedAddress")},
        to=array(ref("NamedAddress")),
        cc=array(ref("NamedAddress")),
        bcc=array(ref("NamedAddress")),
        recipients=array(ref("RecipientStatus"), description="to, cc and bcc in one list, with delivery state"),
        subject=nullable("string"),
        textBody=nullable("string"),
        htmlBody=nullable("string"),
        messageId=nullable("string", description="set when sent"),
        inReplyTo=nullable("string"),
        references=array(STRING),
        attachments=array(ref("OutboundAttachment"), description="without their content"),
        createdAt=DATETIME,
        updatedAt=DATETIME,
        queuedAt=nullable("string", format="date-time"),
        sentAt=nullable("string", format="date-time"),
        nextRetryAt=nullable("string", format="date-time"),
        retryCount=INTEGER,
        lastError=nullable("string"),
        draftEmailId=nullable("integer", description="its copy in the Drafts folder, while a draft"),
        sentEmailId=nullable("integer", description="its copy in the Sent folder, once sent through the API"),
    ),
    "OutboundListItem": obj(
        [
            "id",
            "status",
            "from",
            "recipients",
            "subject",
            "attachmentCount",
            "createdAt",
            "updatedAt",
            "queuedAt",
            "sentAt",
            "lastError",
        ],
        id=INTEGER,
        status=_OUTBOUND_STATUS,
        **{"from": ref("NamedAddress")},
        recipients=array(
            obj(
                ["address", "kind", "name", "status"],
                address=STRING,
                kind=_RECIPIENT_KIND,
                name=nullable("string"),
                status=_RECIPIENT_STATUS,
            )
        ),
        subject=nullable("string"),
        attachmentCount=INTEGER,
        createdAt=DATETIME,
        updatedAt=DATETIME,
        queuedAt=nullable("string", format="date-time"),
        sentAt=nullable("string", format="date-time"),
        lastError=nullable("string"),
    ),
    "OutboundDeleted": obj(["deleted", "id"], deleted={"const": True}, id=INTEGER),
    # Real time (hub.py, push.py).
    "HubEvent": {
        "description": "one text frame of /hubs/email",
        "oneOf": [
            _event("NewEmail", ref("EmailSummary"), "a message arrived in (or was copied to) a folder"),
            _event(
                "EmailUpdated",
                obj(
                    ["id", "mailboxId", "flags", "isRead"],
                    id=INTEGER,
                    mailboxId=INTEGER,
                    flags=array(STRING),
                    isRead=BOOLEAN,
                ),
                "a message's flags changed",
            ),
            _event(
                "EmailDeleted",
                obj(["ids", "mailboxId"], ids=array(INTEGER), mailboxId=INTEGER),
                "messages were removed from a folder (expunged)",
            ),
            _event(
                "EmailMoved",
                obj(
                    ["ids", "mailboxId", "fromMailboxId"], ids=array(INTEGER), mailboxId=INTEGER, fromMailboxId=INTEGER
                ),
                "messages moved between the user's folders (REST, IMAP MOVE, bulk); they keep their ids",
            ),
            _event(
                "BulkChanged",
                obj(
                    ["action", "count", "mailboxIds"],
                    action=STRING,
                    count=INTEGER,
                    mailboxIds={"oneOf": [array(INTEGER), {"type": "null"}]},
                ),
                "a bulk action changed count emails in these folders (one event for all of them): refetch them "
                "(every folder when mailboxIds is null: more than 300 were touched)",
            ),
            _event(
                "MailboxChanged",
                obj(
                    ["change", "id"],
                    change={"type": "string", "enum": ["created", "renamed", "deleted"]},
                    id=INTEGER,
                    name=STRING,
                    specialUse=nullable("string"),
                ),
                "a folder was made, renamed or deleted (REST or IMAP); name and specialUse unless deleted",
            ),
            _event(
                "LabelChanged",
                {
                    "allOf": [
                        obj(["change"], change={"type": "string", "enum": ["created", "updated", "deleted"]}),
                        ref("Label"),
                    ]
                },
                "a label was made, renamed or recoloured, or deleted (its emails lost it: a BulkChanged unlabel)",
            ),
            _event(
                "UnreadCountChanged",
                obj(["mailboxId", "unread"], mailboxId=INTEGER, unread=INTEGER),
                "a folder's unread count, after changes to it",
            ),
            _event(
                "DeliveryStatusChanged",
                obj(
                    ["id", "status"],
                    id={"type": "integer", "description": "the outbound email"},
                    status=_OUTBOUND_STATUS,
                ),
                "an outbound email's status changed",
            ),
            _event(
                "Resync",
                obj(
                    ["reason"],
                    reason={"type": "string", "enum": ["reconnected", "bulk", "mailboxes", "lagging"]},
                    mailboxId={"type": "integer", "description": "present when one folder is meant"},
                ),
                "refetch: too much changed to list (bulk), folders were deleted or renamed (mailboxes), "
                "or events may have been missed (reconnected, lagging)",
            ),
        ],
    },
    "VapidPublicKey": obj(
        ["publicKey"], publicKey={"type": "string", "description": "base64url, an uncompressed P-256 point"}
    ),
    "PushSubscriptionRequest": {
        **obj(
            ["endpoint"],
            endpoint={
                "type": "string",
                "format": "uri",
                "maxLength": 2048,
                "description": "https (http only with push.allow_http_endpoints), without credentials",
            },
            p256dh={"type": "string", "description": "base64url, the browser's uncompressed P-256 public key"},
            auth={"type": "string", "description": "base64url, the 16-byte authentication secret"},
            keys=obj(["p256dh", "auth"], p256dh=STRING, auth=STRING),
            expirationTime={"type": ["number", "null"], "description": "accepted and ignored"},
        ),
        "additionalProperties": False,
        "anyOf": [{"required": ["p256dh", "auth"]}, {"required": ["keys"]}],
        "description": "what the browser's PushSubscription.toJSON() gives, or its three fields flat",
    },
    "PushSubscription": obj(
        ["id", "endpoint", "createdAt", "lastUsedAt"],
        id=INTEGER,
        endpoint={"type": "string", "format": "uri"},
        createdAt=DATETIME,
        lastUsedAt=nullable("string", format="date-time", description="the last successful push"),
    ),
    "PushDeleted": obj(["deleted", "id"], deleted={"const": True}, id=INTEGER),
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
    "Unavailable": error("the database is unavailable; try again later"),
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
R, W = "api:read", "api:write"

_outbound_list = returns("one page, most recently changed first", page_of("OutboundListItem"))
_JSON_ERRORS: dict[str, str | dict[str, Any]] = {
    "400": _BAD_BODY,
    "415": "the body is not application/json",
}
_TOO_LARGE = f"attachments over api.max_attachment_size, or {_BODY_TOO_LARGE}"

PATHS: dict[str, dict[str, Any]] = {
    # Folders and mail (mail.py).
    "/api/mailboxes": {
        "get": op(
            "The user's folders with message and unread counts",
            MAIL,
            returns("INBOX first, then by name", obj(["items", "total"], items=array(ref("Mailbox")), total=INTEGER)),
            scope=R,
        ),
        "post": op(
            "Create a folder (and the folders above it)",
            MAIL,
            returns("the new folder", ref("Mailbox")),
            status="201",
            scope=W,
            body=ref("MailboxRequest"),
            errors={
                "409": "it exists (INBOX always does), the special use is taken, or quota.mailboxes is reached",
                "422": "a bad name (empty level, control characters, too long or deep) or special use",
            },
        ),
    },
    "/api/mailboxes/{id}": {
        "patch": op(
            "Rename a folder (folders below follow; renaming INBOX moves its mail to a new folder)",
            MAIL,
            returns("the folder with the new name (for INBOX: the new folder holding its mail)", ref("Mailbox")),
            scope=W,
            params=[MAILBOX_ID],
            body=ref("MailboxRename"),
            errors={
                "404": "no such folder",
                "409": "the new name exists (or is INBOX)",
                "422": "a bad name, or one below the folder itself",
            },
        ),
        "delete": op(
            "Delete a folder and its mail for good",
            MAIL,
            returns("deleted", ref("MailboxDeleted")),
            scope=W,
            params=[MAILBOX_ID],
            errors={
                "404": "no such folder",
                "409": "INBOX, a special-use folder (Sent, Trash...), or one with folders below it",
            },
        ),
    },
    "/api/emails": {
        "get": op(
            "One page of a folder, newest first",
            MAIL,
            returns("the page and the folder's total", page_of("EmailSummary")),
            scope=R,
            params=[query("mailbox", "folder id or name (default INBOX)"), LABEL_FILTER, *PAGING],
            errors={"400": "bad paging parameters", "404": "no such folder or label"},
        )
    },
    "/api/emails/search": {
        "get": op(
            "Full-text search over headers and bodies, with filters",
            MAIL,
            returns(
                "newest first; total counts matches up to 1000 (then totalExact is false: at least that many)",
                {
                    "allOf": [
                        page_of("EmailSummary"),
                        obj(["totalExact"], totalExact={"type": "boolean", "description": "false: total is a floor"}),
                    ]
                },
            ),
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
                LABEL_FILTER,
                *PAGING,
            ],
            errors={
                "400": "a bad parameter, or a page past the first 1000 matches (narrow the search)",
                "404": "no such folder or label",
            },
        )
    },
    "/api/emails/bulk": {
        "post": op(
            "Mark read or unread, flag, unflag, label, unlabel, move or delete up to 1000 emails (ids or a search)",
            MAIL,
            returns("what was done", ref("BulkResult")),
            scope=W,
            body=ref("BulkRequest"),
            errors={
                "404": "no such folder (mailbox, or query.mailbox) or label (label, or query.label)",
                "422": "a bad field; both or neither of ids and query; mailbox given for another action than move "
                "or missing for move (label: for another than label and unlabel, or missing for them); a query "
                "matching more than 1000 emails",
            },
            description=(
                "One transaction: all of it or none. Ids that are not the user's emails are listed in notFound. "
                "The hub sends one BulkChanged event (and the unread counts), not an event per email."
            ),
        )
    },
    "/api/emails/{id}": {
        "get": op(
            "One email: headers, text and sanitised HTML bodies, recipients, attachments",
            MAIL,
            returns("the email", ref("EmailDetail")),
            scope=R,
            params=[
                EMAIL_ID,
                query(
                    "remoteContent",
                    "block (the default): remote images and styles taken out of htmlBody; allow: kept",
                    {"type": "string", "enum": ["block", "allow"], "default": "block"},
                ),
            ],
            errors={"400": "remoteContent not block or allow", "404": "no such email (or another user's)"},
        ),
        "patch": op(
            "Mark read or unread, set flags, or move to another folder",
            MAIL,
            returns("the email as it is now (a move keeps its id)", ref("EmailSummary")),
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
    # Outbound mail (outbound.py).
    "/api/outbound": {
        "post": op(
            "Create a draft (kept server-side, and composed in the Drafts folder)",
            OUTBOUND,
            returns("the draft", ref("Outbound")),
            status="201",
            scope=W,
            body=ref("DraftRequest"),
            body_required=False,
            errors={
                **_JSON_ERRORS,
                "413": _TOO_LARGE,
                "422": "a bad field, or from is not one of the user's addresses",
            },
        )
    },
    "/api/outbound/{id}": {
        "get": op(
            "A draft or sent email, with each recipient's delivery status and last error",
            OUTBOUND,
            returns("the outbound email", ref("Outbound")),
            scope=R,
            params=[OUTBOUND_ID],
            errors={"404": "no such outbound email (or another user's)"},
        ),
        "put": op(
            "Save a draft (auto-save): the fields named replace the draft's, the others stay",
            OUTBOUND,
            returns("the draft", ref("Outbound")),
            scope=W,
            params=[OUTBOUND_ID],
            body=ref("DraftRequest"),
            errors={
                **_JSON_ERRORS,
                "404": "no such outbound email",
                "409": "no longer a draft (conflict)",
                "413": _TOO_LARGE,
                "422": "a bad field, or an attachment id the draft does not have",
            },
        ),
        "delete": op(
            "Discard a draft (and its Drafts folder copy)",
            OUTBOUND,
            returns("discarded", ref("OutboundDeleted")),
            scope=W,
            params=[OUTBOUND_ID],
            errors={"404": "no such outbound email", "409": "no longer a draft (conflict)"},
        ),
    },
    "/api/outbound/{id}/send": {
        "post": op(
            "Send a draft: composed and delivered (local recipients) or queued (remote ones) under the same id",
            OUTBOUND,
            returns("sent or queued; the answer comes once the delivery has committed", ref("Outbound")),
            status="201",
            scope=W,
            params=[OUTBOUND_ID],
            errors={
                "404": "no such outbound email",
                "409": "no longer a draft, or saved while being sent (conflict)",
                "422": "not sendable: from not the user's, no or over 100 recipients, an unknown local recipient",
                "429": _SENDING_LIMIT,
            },
        )
    },
    "/api/outbound/send": {
        "post": op(
            "Compose and send a new email in one step",
            OUTBOUND,
            returns("sent or queued", ref("Outbound")),
            status="201",
            scope=W,
            body=ref("DraftRequest"),
            errors={**_JSON_ERRORS, "413": _TOO_LARGE, "422": "a bad field, or not sendable", "429": _SENDING_LIMIT},
        )
    },
    "/api/outbound/reply/{emailId}": {
        "post": op(
            "Reply to an email of the user's: Re: subject, the original quoted, In-Reply-To and References set",
            OUTBOUND,
            returns("the reply: a draft, or sent or queued with send", ref("Outbound")),
            status="201",
            scope=W,
            params=[
                REPLY_TO_ID,
                query("all", "true, 1 or yes: reply to all (as replyAll in the body); anything else: no"),
            ],
            body=ref("ReplyRequest"),
            body_required=False,
            errors={
                **_JSON_ERRORS,
                "404": "no such email",
                "413": _TOO_LARGE,
                "422": "a bad field, or not sendable",
                "429": _SENDING_LIMIT,
            },
        )
    },
    "/api/outbound/forward/{emailId}": {
        "post": op(
            "Forward an email of the user's, its attachments carried: Fwd: subject, the original below",
            OUTBOUND,
            returns("the forward: a draft, or sent or queued with send", ref("Outbound")),
            status="201",
            scope=W,
            params=[REPLY_TO_ID],
            body=ref("ForwardRequest"),
            body_required=False,
            errors={
                **_JSON_ERRORS,
                "404": "no such email",
                "413": _TOO_LARGE,
                "422": "a bad field, or not sendable",
                "429": _SENDING_LIMIT,
            },
        )
    },
    "/api/outbound/drafts": {
        "get": op("The user's drafts", OUTBOUND, _outbound_list, scope=R, params=PAGING, errors={"400": "bad paging"})
    },
    "/api/outbound/outbox": {
        "get": op(
            "Mail not sent yet: queued, sending, held by the administrator",
            OUTBOUND,
            _outbound_list,
            scope=R,
            params=PAGING,
            errors={"400": "bad paging"},
        )
    },
    "/api/outbound/sent": {
        "get": op(
            "Mail delivered or given up on: sent, partial_failure, failed",
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
            params=[KEY_ID, KEY_SELF],
            errors={
                "403": "the key has scopes the calling key lacks",
                "404": "no such key (or already revoked, or another user's)",
                "409": "the calling key itself, without self=true",
            },
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
            params=[KEY_ID, KEY_SELF],
            errors={
                "403": "the key has scopes the calling key lacks",
                "404": "no such key",
                "409": "the calling key itself without self=true, or a key whose expiry has passed",
            },
            key_management=True,
        )
    },
    # Real time (hub.py).
    "/hubs/email": {
        "get": {
            **op(
                "WebSocket: the user's mail events, one JSON HubEvent {type, data} per text frame",
                REALTIME,
                returns("switching to WebSocket"),
                status="101",
                scope=R,
                description=(
                    "Open with Upgrade: websocket (RFC 6455). Browsers that cannot set headers pass the key as "
                    "the access_token query parameter. Events (components/schemas/HubEvent): NewEmail, "
                    "EmailUpdated, EmailDeleted, UnreadCountChanged, DeliveryStatusChanged, Resync; only the "
                    "user's own. One-way: what the client sends is ignored. A client too slow to read its "
                    "events is closed with 1008; at shutdown every client gets 1001."
                ),
                errors={
                    "400": "not a WebSocket upgrade",
                    "429": {
                        **RESPONSES["RateLimited"],
                        "description": (
                            "over a per-key limit (Retry-After), or the user has 50 hub connections open "
                            "on this server already"
                        ),
                    },
                    "503": "the server is shutting down, or the database is unavailable",
                },
            ),
            "security": [{"bearer": [R]}, {"accessToken": [R]}],
            "x-websocket-messages": ref("HubEvent"),
        }
    },
    "/api/push-subscriptions/vapid-public-key": {
        "get": op(
            "The server's VAPID public key, for PushManager.subscribe() (applicationServerKey)",
            REALTIME,
            returns("the key", ref("VapidPublicKey")),
            errors={"503": "web push is not configured: push_not_configured (push.vapid_*)"},
        )
    },
    "/api/push-subscriptions": {
        "get": op(
            "The user's web push subscriptions",
            REALTIME,
            returns("every subscription", obj(["items", "total"], items=array(ref("PushSubscription")), total=INTEGER)),
            scope=R,
        ),
        "post": op(
            "Subscribe a browser to web push (idempotent per endpoint)",
            REALTIME,
            returns("a new subscription", ref("PushSubscription")),
            status="201",
            more={"200": returns("the endpoint was the user's already (keys updated)", ref("PushSubscription"))},
            scope=W,
            body=ref("PushSubscriptionRequest"),
            errors={
                **_JSON_ERRORS,
                "422": (
                    "a bad field: endpoint not https (unless push.allow_http_endpoints) or with credentials, "
                    "p256dh not a P-256 point, auth not 16 bytes, an unknown field"
                ),
                "503": "web push is not configured (push_not_configured), or the database is unavailable",
            },
        ),
    },
    "/api/push-subscriptions/{id}": {
        "delete": op(
            "Unsubscribe",
            REALTIME,
            returns("deleted", ref("PushDeleted")),
            scope=W,
            params=[path_param("id", "the subscription's id")],
            errors={"404": "no such subscription (or another user's)"},
        )
    },
    # Sender lists (senders.py), applied by the spam filter before rspamd's verdict.
    "/api/sender-rules": {
        "get": op(
            "The user's allow and block lists of senders",
            MAIL,
            returns("every entry", obj(["items", "total"], items=array(ref("SenderRule")), total=INTEGER)),
            scope=R,
        ),
        "post": op(
            "Allow or block a sender (an address, or a domain and its subdomains); an entry on the other "
            "list moves to this one",
            MAIL,
            returns("the entry", ref("SenderRule")),
            status="201",
            scope=W,
            body=ref("SenderRuleRequest"),
            errors={**_JSON_ERRORS, "422": "not an address or a domain name, or kind not allow or block"},
        ),
    },
    "/api/sender-rules/{id}": {
        "delete": op(
            "Remove an entry from the user's lists",
            MAIL,
            returns("deleted", ref("PushDeleted")),
            scope=W,
            params=[path_param("id", "the entry's id")],
            errors={"404": "no such entry (or another user's)"},
        )
    },
    # The server (meta.py, this module).
    "/api/profile": {
        "get": op(
            "Who the key belongs to: addresses, display name, the key's scopes, the mailbox's quota",
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
PATHS["/.well-known/mta-sts.txt"] = {
    "get": op(
        "Our MTA-STS policy (RFC 8461) for the hosted domain of the Host header (mta-sts.DOMAIN)",
        META,
        returns("version, mode, mx and max_age lines (the mta_sts configuration)", {"type": "string"}, "text/plain"),
        errors={"404": "mta_sts.mode is none, or Host is not mta-sts. and a hosted domain"},
    )
}
PATHS["/.well-known/autoconfig/mail/config-v1.1.xml"] = {"get": _AUTOCONFIG}
PATHS["/mail/config-v1.1.xml"] = {"get": copy.deepcopy(_AUTOCONFIG)}


# --- issue 17's apps features: preferences, export, the reference pages ------------------------------

PREFERENCES, EXPORT = "preferences", "export"
_EXT_TAGS = [PREFERENCES, EXPORT]

_EXT_SCHEMAS: dict[str, Any] = {
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


_EXT_PATHS: dict[str, dict[str, Any]] = {
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
PATHS |= _EXT_PATHS
SCHEMAS |= _EXT_SCHEMAS

# --- labels (api/labels.py, and their routes under /api/emails in api/mail.py) ------------------------

LABELS = "labels"
_EXT_TAGS.append(LABELS)
_COLOR = {"type": "string", "pattern": "^#[0-9A-Fa-f]{6}$", "description": "#RRGGBB"}
_LABEL_NAME = {"type": "string", "minLength": 1, "maxLength": 100, "description": "unique per user in any case"}

SCHEMAS |= {
    "Label": obj(
        ["id", "name", "color", "keyword"],
        id=INTEGER,
        name=STRING,
        color={"type": "string", "description": "#RRGGBB (upper case)"},
        keyword={
            "type": "string",
            "description": "the IMAP keyword that is this label on a message (mail clients see and set it; "
            "Thunderbird's tags are $label1 to $label5 and keywords derived from the tag name); never changes",
        },
    ),
    "LabelRequest": {
        **obj(
            ["name"],
            name=_LABEL_NAME,
            color={**_COLOR, "description": "#RRGGBB; default Thunderbird's colour for its five tags, else grey"},
            keyword={
                "type": "string",
                "pattern": "^[!#$&'+\\-.0-9:;<=>?@A-Z^_`a-z|~]{1,100}$",
                "description": "adopt this IMAP keyword (one a client already sets); default: derived from the "
                "name as Thunderbird derives a tag's key ($label1 to $label5 for its five default tags)",
            },
        ),
        "additionalProperties": False,
    },
    "LabelChange": {
        **obj(None, name=_LABEL_NAME, color=_COLOR),
        "additionalProperties": False,
        "description": "a new name or colour; the keyword stays",
    },
    "LabelDeleted": obj(
        ["deleted", "id", "unlabelled"],
        deleted={"const": True},
        id=INTEGER,
        unlabelled={"type": "integer", "description": "emails the label was taken off"},
    ),
}

PATHS |= {
    "/api/labels": {
        "get": op(
            "The user's labels",
            LABELS,
            returns("by name", obj(["items", "total"], items=array(ref("Label")), total=INTEGER)),
            scope=R,
        ),
        "post": op(
            "Create a label",
            LABELS,
            returns("the new label", ref("Label")),
            status="201",
            scope=W,
            body=ref("LabelRequest"),
            errors={
                "409": "a label of that name or keyword exists, or the user has 500 labels",
                "422": "a bad name, colour or keyword (or a registered keyword such as $Junk)",
            },
        ),
    },
    "/api/labels/{id}": {
        "patch": op(
            "Rename or recolour a label (its keyword stays, so its emails keep it)",
            LABELS,
            returns("the label", ref("Label")),
            scope=W,
            params=[LABEL_ID],
            body=ref("LabelChange"),
            errors={"404": "no such label", "409": "another label has that name", "422": "a bad name or colour"},
        ),
        "delete": op(
            "Delete a label, taking it off every email first (one BulkChanged unlabel on the hub)",
            LABELS,
            returns("deleted", ref("LabelDeleted")),
            scope=W,
            params=[LABEL_ID],
            errors={"404": "no such label"},
        ),
    },
    "/api/emails/{id}/labels/{labelId}": {
        method: op(
            summary,
            LABELS,
            returns("the email as it is now", ref("EmailSummary")),
            scope=W,
            params=[EMAIL_ID, path_param("labelId", "the label's id")],
            errors={"404": "no such email or label"},
        )
        for method, summary in (
            ("put", "Put a label on an email (its keyword: IMAP clients see it)"),
            ("delete", "Take a label off an email"),
        )
    },
}

# --- threads (api/threads.py) ---------------------------------------------------------

THREADS = "threads"
_EXT_TAGS.append(THREADS)
THREAD_ID = path_param("id", "the thread's id (an email's threadId)")
SCHEMAS["EmailSummary"]["properties"] |= {
    "threadId": nullable("integer", description="the email's thread (null: stored before threads, not reached yet)"),
    "threadCount": {
        "type": "integer",
        "description": "with collapse=thread only: the messages of this thread in the folder",
    },
}
SCHEMAS["HubEvent"]["oneOf"].append(
    _event(
        "ThreadsMerged",
        obj(["threadId", "mergedIds"], threadId=INTEGER, mergedIds=array(INTEGER)),
        "threads were found to be one (a message linked them): their emails are now in threadId, and the "
        "mergedIds threads are gone",
    )
)
SCHEMAS |= {
    "Thread": obj(
        ["id", "messageCount", "unreadCount", "participants", "snippet", "lastReceived", "latestEmailId"],
        id=INTEGER,
        subject=nullable("string", description="the first message's subject"),
        messageCount=INTEGER,
        unreadCount=INTEGER,
        isFlagged={"type": "boolean", "description": "any of its emails is flagged"},
        attachmentCount=INTEGER,
        participants=array(ref("Person"), description="the senders, in the order they first wrote (20 at most)"),
        snippet={"type": "string", "description": "the start of the latest email's text (RFC 8970 preview)"},
        firstReceived=DATETIME,
        lastReceived=DATETIME,
        latestEmailId=INTEGER,
        mailboxIds=array(INTEGER, description="the folders its emails are in"),
    ),
}
SCHEMAS["ThreadDetail"] = {"allOf": [ref("Thread"), page_of("EmailSummary")]}
PATHS |= {
    "/api/threads": {
        "get": op(
            "The user's threads (conversations across folders), latest arrival first",
            THREADS,
            returns("one page and how many threads the user has", page_of("Thread")),
            scope=R,
            params=PAGING,
            errors={"400": "bad paging parameters"},
        )
    },
    "/api/threads/{id}": {
        "get": op(
            "One thread and a page of its emails, oldest first",
            THREADS,
            returns("the thread; items are its emails (total: messageCount)", ref("ThreadDetail")),
            scope=R,
            params=[THREAD_ID, *PAGING],
            errors={"400": "bad paging parameters", "404": "no such thread (or another user's)"},
        )
    },
    "/api/threads/{id}/labels/{labelId}": {
        method: op(
            summary,
            THREADS,
            returns(
                "how many of the thread's emails it was applied to (1,000 per transaction: a longer thread in several)",
                obj(["threadId", "count"], threadId=INTEGER, count=INTEGER),
            ),
            scope=W,
            params=[THREAD_ID, path_param("labelId", "the label's id")],
            errors={"404": "no such thread or label"},
        )
        for method, summary in (
            ("put", "Put a label on every email of a thread (their keyword: IMAP clients see it)"),
            ("delete", "Take a label off every email of a thread"),
        )
    },
}
_emails_get = PATHS["/api/emails"]["get"]
_emails_get["parameters"].append(
    query(
        "collapse",
        "thread: one item per thread, its newest email in the folder (with threadCount); none (the default): "
        "every email",
        {"type": "string", "enum": ["none", "thread"], "default": "none"},
    )
)
_emails_get["responses"]["400"]["description"] += ", or collapse not thread or none"


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (a fresh copy)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Relate Mail API",
            "version": relate.__version__,
            "description": (
                "REST API of Relate Mail for web, desktop and mobile apps. Authenticate with an API key: "
                "`Authorization: Bearer KEY` (or `ApiKey KEY`), or with an access token of the OIDC provider "
                "the server is configured for (api.oidc). Lists are paginated "
                "(`page`, `pageSize`; answers carry `items`, `page`, `pageSize`, `total`). Errors are "
                '`{"error": code, "message": text}`. Per-key limits per minute: requests, writes, and '
                "key management; over one: 429 with Retry-After."
            ),
            "license": {"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"},
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": name} for name in (MAIL, OUTBOUND, KEYS, REALTIME, META, *_EXT_TAGS)],
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
                    "description": "an API key (relate_<prefix>_<secret>) or an OIDC access token (a JWT of "
                    "api.oidc.issuer); roles are the scopes a route needs",
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
