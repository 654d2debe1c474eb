"""Outbound mail over REST: drafts, send, reply, forward, outbox and sent.

This module reads requests and shapes answers; sending itself (recipients,
limits, composing, the delivery transaction) is services/outbound.py's.

Policy:

- A draft (``POST /api/outbound``, ``PUT /api/outbound/{id}``) is kept
  server-side and, composed, in the user's Drafts folder (flag ``\\Draft``),
  replaced on every save, so IMAP clients and other apps see it. ``PUT``
  replaces the fields it names and leaves the others as they are;
  ``attachments`` in a ``PUT`` lists what the draft keeps (``{"id": n}``)
  and adds (base64 ``content``). Attachments of one draft together may hold
  ``api.max_attachment_size`` decoded bytes; more is 413 ``too_large``.
- Every address is checked when saved (422 on a malformed one); ``from``
  must be one of the user's addresses (primary or alias, a display name
  allowed), else 422. Sending also needs 1 to 100 recipients (to, cc and
  bcc together, each address once) and every local one to exist (422).
- Sending counts against the user's daily sending limits
  (``submission.limits``, store/sending.py), as SMTP submission does: over
  one, 429 ``sending_limit`` (SMTP's 451 4.7.0) with ``Retry-After``,
  nothing sent, and the log names the user once.
- Sending composes the message (RFC 5322 Message-Id at the From domain,
  Date, In-Reply-To, References; no Bcc header in what recipients get, the
  Sent copy keeps it) and delivers it through the one delivery transaction:
  local recipients have it in their INBOX and remote ones are queued for
  the delivery daemon, a copy is in Sent, and the draft becomes the queued
  (or sent) message under the same id, its Drafts copy removed. The answer
  (201) comes only after that transaction has committed.
- Replies and forwards are drafts services/outbound.py makes from a message of the user's: Re: or
  Fwd: subject, the original quoted, In-Reply-To and References from it; a
  forward carries the original's attachments (any in the request are
  added). ``replyAll`` (or ``?all=true``) replies to all; ``send: true``
  sends at once instead of saving a draft.
- Lists: ``drafts``; ``outbox`` (queued, sending, and held by the
  administrator: not sent yet); ``sent`` (sent, partial_failure, failed).
  ``GET /api/outbound/{id}`` shows each recipient's status and last error.
- Writes need ``api:write``, reads ``api:read``. Another user's outbound
  mail is indistinguishable from none (404); changing or sending one that
  is no longer a draft is 409.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import logging
import re
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web

from relate.api.app import json_body, page_of, paging, path_id, state
from relate.api.errors import ApiError, invalid, not_found
from relate.api.security import READ, WRITE, client_address, principal, requires
from relate.errors import Invalid
from relate.mail import compose as mime
from relate.mail.address import normalize_address
from relate.services import outbound
from relate.services.outbound import Edit
from relate.store import accounts, drafts

log = logging.getLogger("relate.api")
routes = web.RouteTableDef()

MAX_ATTACHMENTS = 100
LISTS = {
    "drafts": ("draft",),
    "outbox": ("queued", "sending", "held"),
    "sent": ("sent", "partial_failure", "failed"),
}
_FIELDS = {"from", "to", "cc", "bcc", "subject", "textBody", "htmlBody", "inReplyTo", "references", "attachments"}
_CONTENT_ID = re.compile(r"^[^<>\s\"\\]{1,200}$")
# What cannot be in a one-line field (subject, display name, filename): C0 and C1 controls (tab aside,
# checked as a space), DEL, and U+2028/U+2029, which end a line for Python's str.splitlines() and the
# email package as CR and LF do. A mail client pasting one into a subject would be asked to remove it.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# --- reading requests ---------------------------------------------------------------------


def _text(value: Any, name: str, *, limit: int, single_line: bool = False) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string")
    if len(value) > limit:
        raise invalid(f"{name} is too long ({limit} characters at most)")
    if single_line and _CONTROL.search(value.replace("\t", " ")):
        raise invalid(f"{name} must be one line without control characters")
    if "\x00" in value:
        raise invalid(f"{name} must not contain NUL characters")
    return value


def _person(value: Any, name: str) -> mime.Person:
    """``"a@b"``, ``"Name <a@b>"`` or ``{"email", "name"}``, checked and normalized."""
    if isinstance(value, dict):
        unknown = set(value) - {"email", "name"}
        if unknown:
            raise invalid(f"{name}: unknown fields {', '.join(sorted(unknown))}")
        address = _text(value.get("email"), f"{name}.email", limit=320, single_line=True)
        display = _text(value.get("name"), f"{name}.name", limit=200, single_line=True)
    elif isinstance(value, str):
        text = _text(value, name, limit=600, single_line=True) or ""
        parsed = email.utils.getaddresses([text])
        if len(parsed) != 1 or not parsed[0][1]:
            raise invalid(f"{name}: not a valid address: {value[:100]!r}")
        display, address = parsed[0]
    else:
        raise invalid(f"{name} must be an address string or an object with email and name")
    if not address:
        raise invalid(f"{name}: an address is required")
    try:
        normalized = normalize_address(address)
    except Invalid:
        raise invalid(f"{name}: not a valid address: {address[:100]!r}") from None
    return mime.Person(normalized, display.strip() if display and display.strip() else None)


def _people(value: Any, name: str) -> list[mime.Person]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(f"{name} must be a list of addresses")
    if len(value) > outbound.MAX_RECIPIENTS:
        raise invalid(f"{name}: at most {outbound.MAX_RECIPIENTS} recipients")
    return [_person(item, f"{name}[{i}]") for i, item in enumerate(value)]


def _message_ids(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else None
    if items is None or len(items) > 100 or not all(isinstance(v, str) and mime.is_message_id(v) for v in items):
        raise invalid(f"{name} must be a list of message ids like <id@host> (at most 100)")
    return list(items)


def _attachment(value: Any, name: str) -> drafts.NewAttachment:
    if not isinstance(value, dict):
        raise invalid(f"{name} must be an object")
    unknown = set(value) - {"filename", "contentType", "content", "contentId", "inline"}
    if unknown:
        raise invalid(f"{name}: unknown fields {', '.join(sorted(unknown))}")
    filename = _text(value.get("filename"), f"{name}.filename", limit=255, single_line=True)
    if not filename or not filename.strip():
        raise invalid(f"{name}.filename is required")
    content_type = value.get("contentType") or "application/octet-stream"
    if not isinstance(content_type, str) or not outbound.CONTENT_TYPE.match(content_type):
        raise invalid(f"{name}.contentType must be a MIME type like application/pdf")
    if content_type.lower().startswith("multipart/"):
        raise invalid(f"{name}.contentType cannot be multipart")
    content_id = value.get("contentId")
    if content_id is not None and (not isinstance(content_id, str) or not _CONTENT_ID.match(content_id.strip("<>"))):
        raise invalid(f"{name}.contentId must be an id without spaces or brackets")
    inline = value.get("inline", False)
    if not isinstance(inline, bool):
        raise invalid(f"{name}.inline must be true or false")
    content = value.get("content")
    if not isinstance(content, str):
        raise invalid(f"{name}.content must be the attachment as base64")
    try:
        data = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{name}.content is not valid base64") from None
    return drafts.NewAttachment(
        filename=filename.strip(),
        content_type=content_type.lower(),
        data=data,
        content_id=content_id.strip("<>") if content_id else None,
        inline=inline,
    )


def _apply(edit: Edit, data: dict[str, Any], limit: int) -> Edit:
    """Apply the fields a request names to ``edit``; raises 422 (bad input) or 413 (attachments too large)."""
    unknown = set(data) - _FIELDS
    if unknown:
        raise invalid(f"unknown fields: {', '.join(sorted(unknown))}")
    if "from" in data:
        edit.sender = _person(data["from"], "from")
    for kind in ("to", "cc", "bcc"):
        if kind in data:
            setattr(edit, kind, _people(data[kind], kind))
    if "subject" in data:
        edit.subject = _text(data["subject"], "subject", limit=998, single_line=True)
    if "textBody" in data:
        edit.text_body = _text(data["textBody"], "textBody", limit=10_000_000)
    if "htmlBody" in data:
        edit.html_body = _text(data["htmlBody"], "htmlBody", limit=10_000_000)
    if "inReplyTo" in data:
        value = data["inReplyTo"]
        if value is not None and not (isinstance(value, str) and mime.is_message_id(value)):
            raise invalid("inReplyTo must be a message id like <id@host>")
        edit.in_reply_to = value
    if "references" in data:
        edit.references = _message_ids(data["references"], "references")
    if "attachments" in data:
        items = data["attachments"]
        if not isinstance(items, list) or len(items) > MAX_ATTACHMENTS:
            raise invalid(f"attachments must be a list (at most {MAX_ATTACHMENTS})")
        keep: list[int] = []
        new: list[drafts.NewAttachment] = []
        for i, item in enumerate(items):
            if isinstance(item, dict) and set(item) == {"id"}:
                if type(item["id"]) is not int or item["id"] not in edit.existing:
                    raise invalid(f"attachments[{i}]: this draft has no attachment {item['id']!r}")
                keep.append(item["id"])
            else:
                new.append(_attachment(item, f"attachments[{i}]"))
        edit.keep, edit.new = keep, new
    if edit.attachment_bytes() > limit:
        raise ApiError(413, "too_large", f"attachments may hold {limit} bytes in all")
    return edit


async def _read_body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    if optional and not request.body_exists:
        return {}
    return await json_body(request)


# --- the user's identity -----------------------------------------------------------------


async def _default_sender(request: web.Request) -> mime.Person:
    return await outbound.default_sender(state(request).pool, principal(request).address)


async def _check_sender(request: web.Request, sender: mime.Person) -> None:
    own = await accounts.user_addresses(state(request).pool, principal(request).user_id)
    if sender.email not in own:
        raise invalid(f"from must be one of your addresses ({', '.join(sorted(own))})")


def _edit_of(row: dict[str, Any]) -> Edit:
    """A stored draft as an :class:`Edit`."""
    people: dict[str, list[mime.Person]] = {"to": [], "cc": [], "bcc": []}
    for r in row["recipients"]:
        people[r["kind"]].append(mime.Person(r["address"], r["name"]))
    return Edit(
        sender=mime.Person(row["from_address"], row["from_name"]),
        to=people["to"],
        cc=people["cc"],
        bcc=people["bcc"],
        subject=row["subject"],
        text_body=row["text_body"],
        html_body=row["html_body"],
        in_reply_to=row["in_reply_to"],
        references=list(row["references"] or []),
        existing={a["id"]: a["size"] for a in row["attachments"]},
    )


# --- composing and storing -----------------------------------------------------------------


def _stored_attachments(rows: list[dict[str, Any]]) -> list[mime.Attachment]:
    return [mime.Attachment(r["filename"], r["content_type"], r["data"], r["content_id"], r["inline"]) for r in rows]


def _new_attachments(items: list[drafts.NewAttachment]) -> list[mime.Attachment]:
    return [mime.Attachment(a.filename, a.content_type, a.data, a.content_id, a.inline) for a in items]


async def _write_copy(conn: asyncpg.Connection, user_id: int, email_id: int, edit: Edit) -> None:
    """Compose the draft as it is now stored and make it the Drafts folder's copy."""
    stored = await drafts.attachment_data(conn, email_id)
    raw = await outbound.compose(outbound.compose_draft(edit, _stored_attachments(stored)), include_bcc=True)
    await drafts.replace_copy(conn, user_id, email_id, raw)


async def _create_draft(request: web.Request, edit: Edit) -> web.Response:
    await _check_sender(request, edit.sender)
    user_id = principal(request).user_id
    async with state(request).pool.acquire() as conn, conn.transaction():
        email_id = await drafts.create(conn, user_id, edit.fields())
        await _write_copy(conn, user_id, email_id, edit)
    return await _answer(request, email_id, 201)


def _flag(value: Any, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(f"{name} must be true or false")
    return value


async def _start(request: web.Request, edit: Edit, send: bool) -> web.Response:
    """A reply or forward: saved as a draft, or (``send``) sent at once."""
    if not send:
        return await _create_draft(request, edit)
    email_id = await _send(request, edit, _new_attachments(edit.new), None)
    return await _answer(request, email_id, 201)


async def _load(request: web.Request, email_id: int) -> dict[str, Any]:
    row = await drafts.get(state(request).pool, principal(request).user_id, email_id)
    if row is None:
        raise not_found("outbound email")
    return row


def _require_draft(row: dict[str, Any]) -> None:
    if row["status"] != "draft":
        raise ApiError(409, "conflict", f"outbound email {row['id']} is not a draft any more (it is {row['status']})")


# --- sending ----------------------------------------------------------------------------------


async def _send(
    request: web.Request, edit: Edit, attachments: list[mime.Attachment], row: dict[str, Any] | None
) -> int:
    """Send through services/outbound.py once the sender is checked; the outbound id."""
    st = state(request)
    who = principal(request)
    await _check_sender(request, edit.sender)
    try:
        sent = await outbound.send(st.pool, st.cfg, who.user_id, who.address, edit, attachments, row)
    except outbound.SendingLimit as exc:
        if exc.first:
            log.warning(
                "api-sending-limit user=%s %s client=%s: the user's mail is refused (429) until the last "
                "24 hours' count falls under the limit (relatectl user limits)",
                who.address,
                exc.summary,
                client_address(request),
            )
        raise ApiError(429, "sending_limit", str(exc), headers={"Retry-After": "3600"}) from None
    # Local recipients' copies are announced by the change feed as deliveries (hub NewEmail, web push).
    return sent.outbound_id


# --- answers ---------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _recipient(r: dict[str, Any], draft: bool) -> dict[str, Any]:
    """One recipient's delivery state (``status`` is null while the email is a draft)."""
    return {
        "address": r["address"],
        "kind": r["kind"],
        "name": r["name"],
        "status": None if draft else r["status"],
        "attempts": r["attempts"],
        "statusCode": r["status_code"],
        "lastError": r["last_error"],
        "remoteReply": r["remote_reply"],
        "remoteMta": r["remote_mta"],
        "nextAttemptAt": None if draft else _iso(r["next_attempt_at"]),
        "updatedAt": _iso(r["updated_at"]),
    }


def detail(row: dict[str, Any]) -> dict[str, Any]:
    """The full shape of one outbound email: the draft's fields (as a PUT takes them) plus delivery state."""
    draft = row["status"] == "draft"
    people: dict[str, list[dict[str, Any]]] = {"to": [], "cc": [], "bcc": []}
    for r in row["recipients"]:
        people[r["kind"]].append({"email": r["address"], "name": r["name"]})
    return {
        "id": row["id"],
        "status": row["status"],
        "from": {"name": row["from_name"], "email": row["from_address"]},
        **people,
        "recipients": [_recipient(r, draft) for r in row["recipients"]],
        "subject": row["subject"],
        "textBody": row["text_body"],
        "htmlBody": row["html_body"],
        "messageId": row["message_id"],
        "inReplyTo": row["in_reply_to"],
        "references": list(row["references"] or []),
        "attachments": [
            {
                "id": a["id"],
                "filename": a["filename"],
                "contentType": a["content_type"],
                "size": a["size"],
                "contentId": a["content_id"],
                "inline": a["inline"],
            }
            for a in row["attachments"]
        ],
        "createdAt": _iso(row["created_at"]),
        "updatedAt": _iso(row["updated_at"]),
        "queuedAt": _iso(row["queued_at"]),
        "sentAt": _iso(row["sent_at"]),
        "nextRetryAt": _iso(row["next_retry_at"]),
        "retryCount": row["retry_count"],
        "lastError": row["last_error"],
        "draftEmailId": row["draft_message_id"],
        "sentEmailId": row["sent_message_id"],
    }


def list_item(row: dict[str, Any]) -> dict[str, Any]:
    """The listing shape of an outbound email."""
    return {
        "id": row["id"],
        "status": row["status"],
        "from": {"name": row["from_name"], "email": row["from_address"]},
        "recipients": [r | {"status": None} if row["status"] == "draft" else r for r in row["recipients"]],
        "subject": row["subject"],
        "attachmentCount": row["attachment_count"],
        "createdAt": _iso(row["created_at"]),
        "updatedAt": _iso(row["updated_at"]),
        "queuedAt": _iso(row["queued_at"]),
        "sentAt": _iso(row["sent_at"]),
        "lastError": row["last_error"],
    }


async def _answer(request: web.Request, email_id: int, status: int = 200) -> web.Response:
    row = await _load(request, email_id)
    return web.json_response(detail(row), status=status)


# --- routes: lists first, so their names never reach /{id} ------------------------------------------


def _lister(statuses: tuple[str, ...]) -> Any:
    @requires(READ)
    async def handler(request: web.Request) -> web.Response:
        page, size = paging(request)
        rows, total = await drafts.listing(
            state(request).pool, principal(request).user_id, statuses, (page - 1) * size, size
        )
        return web.json_response(page_of([list_item(r) for r in rows], page, size, total))

    return handler


for _name, _statuses in LISTS.items():
    routes.get(f"/api/outbound/{_name}")(_lister(_statuses))


@routes.post("/api/outbound")
@requires(WRITE)
async def create_draft(request: web.Request) -> web.Response:
    data = await _read_body(request, optional=True)
    edit = _apply(Edit(sender=await _default_sender(request)), data, state(request).cfg.api.max_attachment_size)
    return await _create_draft(request, edit)


# RFC 5322 §3.6 (the message a send composes); the delivery transaction in relate.delivery.
@routes.post("/api/outbound/send")
@requires(WRITE)
async def send_now(request: web.Request) -> web.Response:
    data = await json_body(request)
    edit = _apply(Edit(sender=await _default_sender(request)), data, state(request).cfg.api.max_attachment_size)
    email_id = await _send(request, edit, _new_attachments(edit.new), None)
    return await _answer(request, email_id, 201)


# RFC 5322 §3.6.4 (In-Reply-To, References) and §3.6.5 (Re:); services/outbound.py builds both drafts.
@routes.post("/api/outbound/reply/{emailId}")
@requires(WRITE)
async def reply(request: web.Request) -> web.Response:
    data = await _read_body(request, optional=True)
    query_all = request.query.get("all", "").lower() in ("1", "true", "yes")
    reply_all = _flag(data.pop("replyAll", None), "replyAll") or query_all
    send = _flag(data.pop("send", None), "send")
    who = principal(request)
    edit = await outbound.reply(
        state(request).pool, who.user_id, who.address, path_id(request, "emailId"), reply_all=reply_all
    )
    edit = _apply(edit, data, state(request).cfg.api.max_attachment_size)
    return await _start(request, edit, send)


@routes.post("/api/outbound/forward/{emailId}")
@requires(WRITE)
async def forward(request: web.Request) -> web.Response:
    data = await _read_body(request, optional=True)
    send = _flag(data.pop("send", None), "send")
    added = data.pop("attachments", None)
    who = principal(request)
    edit = await outbound.forward(state(request).pool, who.user_id, who.address, path_id(request, "emailId"))
    if added is not None:
        # Attachments named in the request come in addition to the forwarded ones.
        if not isinstance(added, list) or len(added) + len(edit.new) > MAX_ATTACHMENTS:
            raise invalid(f"attachments must be a list (at most {MAX_ATTACHMENTS} with the forwarded ones)")
        edit.new = edit.new + [_attachment(item, f"attachments[{i}]") for i, item in enumerate(added)]
    edit = _apply(edit, data, state(request).cfg.api.max_attachment_size)
    return await _start(request, edit, send)


@routes.get("/api/outbound/{id}")
@requires(READ)
async def get_outbound(request: web.Request) -> web.Response:
    return await _answer(request, path_id(request))


@routes.put("/api/outbound/{id}")
@requires(WRITE)
async def save_draft(request: web.Request) -> web.Response:
    data = await json_body(request)
    email_id = path_id(request)
    row = await _load(request, email_id)
    _require_draft(row)
    edit = _apply(_edit_of(row), data, state(request).cfg.api.max_attachment_size)
    await _check_sender(request, edit.sender)
    user_id = principal(request).user_id
    async with state(request).pool.acquire() as conn, conn.transaction():
        await drafts.save(conn, user_id, email_id, edit.fields())
        await _write_copy(conn, user_id, email_id, edit)
    return await _answer(request, email_id)


@routes.delete("/api/outbound/{id}")
@requires(WRITE)
async def discard_draft(request: web.Request) -> web.Response:
    email_id = path_id(request)
    async with state(request).pool.acquire() as conn:
        await drafts.discard(conn, principal(request).user_id, email_id)
    return web.json_response({"deleted": True, "id": email_id})


@routes.post("/api/outbound/{id}/send")
@requires(WRITE)
async def send_draft(request: web.Request) -> web.Response:
    row = await _load(request, path_id(request))
    _require_draft(row)
    edit = _edit_of(row)
    async with state(request).pool.acquire() as conn:
        stored = await drafts.attachment_data(conn, row["id"])
    email_id = await _send(request, edit, _stored_attachments(stored), row)
    return await _answer(request, email_id, 201)
