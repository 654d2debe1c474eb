"""Mail: list, search, read, raw, attachments; flag, label, move, delete one message or many (bulk).

Reads need ``api:read``, changes ``api:write``. Changes are services/mail.py's
(the store functions IMAP uses, so every IMAP session, IDLE included, and the
WebSocket hub hear of them). An email keeps its id when it moves between
folders. Deleting moves to Trash; deleting from Trash expunges, for this user
only (other copies are separate messages). A bulk action takes up to 1,000
ids, or a search, and runs in one transaction with one hub event.
"""

from __future__ import annotations

import asyncio
import functools
import re
from datetime import datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from relate.api.app import date_param, json_body, mailbox_ref, page_of, paging, path_id, state, utc_datetime
from relate.api.errors import ApiError, bad_request, invalid, not_found
from relate.api.security import READ, WRITE, principal, requires
from relate.api.shapes import cid_path, mailbox_name, person, summary
from relate.config import Config
from relate.mail import display
from relate.mail.address import comparable_address
from relate.mail.headers import decoded_fields
from relate.mail.mime import ParsedMessage, parse_message, part_content
from relate.mailauth import authres, verdict
from relate.services import labels as label_service
from relate.services import mail as mail_service
from relate.spam import filter as spam_filter
from relate.store import accounts
from relate.store import emails as store

routes = web.RouteTableDef()

SYSTEM_FLAGS = {"\\seen": "\\Seen", "\\answered": "\\Answered", "\\flagged": "\\Flagged"}
SYSTEM_FLAGS |= {"\\deleted": "\\Deleted", "\\draft": "\\Draft"}
# RFC 9051 §9 flag-keyword: an atom (no specials, no `\`).
_KEYWORD = re.compile(r"^[!#$&'+\-.0-9:;<=>?@A-Z^_`a-z|~]{1,100}$")


@routes.get("/api/emails")
@requires(READ)
async def list_emails(request: web.Request) -> web.Response:
    box = await mailbox_ref(request, request.query.get("mailbox") or "INBOX")
    page, size = paging(request)
    keyword = await label_param(request)
    pool = state(request).pool
    labels = await user_labels(request)
    collapse = request.query.get("collapse") or "none"
    if collapse not in ("none", "thread"):
        raise bad_request("collapse must be thread or none")
    if collapse == "thread":  # one item per thread: its newest email here, with threadCount
        if keyword is not None:
            raise bad_request("collapse=thread does not combine with label")
        rows, total = await store.listing_by_thread(pool, box["id"], (page - 1) * size, size)
        items = [summary(r, labels) | {"threadCount": r["thread_count"]} for r in rows]
        return web.json_response(page_of(items, page, size, total))
    rows, total = await store.listing(pool, box["id"], (page - 1) * size, size, keyword)
    return web.json_response(page_of([summary(r, labels) for r in rows], page, size, total))


async def label_param(request: web.Request) -> str | None:
    """The keyword of the ``label`` query parameter's label (an id), None without one; 404 if it is no label."""
    raw = request.query.get("label")
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19):
        raise not_found("label")
    return await label_service.keyword_of(state(request).pool, principal(request).user_id, int(raw))


async def user_labels(request: web.Request) -> dict[str, int]:
    """The caller's label ids by keyword, for the ``labels`` of email shapes."""
    return await label_service.by_keyword(state(request).pool, principal(request).user_id)


def _bool_param(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise bad_request(f"{name} must be true or false")


@routes.get("/api/emails/search")
@requires(READ)
async def search_emails(request: web.Request) -> web.Response:
    q = request.query.get("q", "").strip()
    if len(q) > 1000:
        raise bad_request("q is too long (1000 characters at most)")
    mailbox = request.query.get("mailbox")
    box_id = (await mailbox_ref(request, mailbox))["id"] if mailbox else None
    page, size = paging(request)
    keyword = await label_param(request)
    if page * size > store.SEARCH_CAP:
        raise bad_request(f"search answers the first {store.SEARCH_CAP} matches; narrow the search")
    rows, total, exact = await store.search(
        state(request).pool,
        principal(request).user_id,
        query=q or None,
        mailbox_id=box_id,
        sender=request.query.get("from") or None,
        recipient=request.query.get("to") or None,
        after=date_param(request, "after"),
        before=date_param(request, "before"),
        has_attachments=_bool_param(request, "hasAttachments"),
        is_read=_bool_param(request, "isRead"),
        offset=(page - 1) * size,
        limit=size,
        keyword=keyword,
    )
    labels = await user_labels(request)
    body = page_of([summary(r, labels) for r in rows], page, size, total)
    body["totalExact"] = exact  # false: at least `total` matches
    return web.json_response(body)


def _detail(
    raw: bytes, header_end: int, email_id: int, block_remote: bool
) -> tuple[ParsedMessage, list[dict[str, str]], display.Display | None]:
    """What the detail view needs of the stored bytes: the parse, every header field in order (RFC 2047
    words decoded, bounded: mail/headers.py) and the HTML body made safe to show (remote content blocked
    unless asked for: mail/display.py). Run in a worker thread: a big or hostile message costs tens of
    milliseconds."""
    parsed = parse_message(raw)
    headers = [{"name": name, "value": value} for name, value in decoded_fields(raw, header_end)]
    html = None
    if parsed.html_body is not None:
        html = display.display_html(
            parsed.html_body, cid_url=functools.partial(cid_path, email_id), block_remote=block_remote
        )
    return parsed, headers, html


def _attachments(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "index": i,
            "part": a["part"],
            "filename": a.get("filename"),
            "contentType": a.get("contentType"),
            "size": a.get("size"),
            "contentId": a.get("contentId"),
            "inline": bool(a.get("inline")),
        }
        for i, a in enumerate(row.get("attachments") or [])
    ]


async def _sent_by_user(request: web.Request, row: dict[str, Any]) -> bool:
    """Whether the user wrote this message (their Sent/Drafts copy, or From one of their addresses)."""
    if row["special_use"] in ("\\Sent", "\\Drafts"):
        return True
    own = await accounts.user_addresses(state(request).pool, principal(request).user_id)
    return any(comparable_address(a.get("email") or "") in own for a in row.get("from_addr") or [])


@routes.get("/api/emails/{id}")
@requires(READ)
async def get_email(request: web.Request) -> web.Response:
    remote = request.query.get("remoteContent", "block")
    if remote not in ("block", "allow"):
        raise bad_request("remoteContent must be block or allow")
    email_id = path_id(request)
    row = await store.get(state(request).pool, principal(request).user_id, email_id)
    if row is None:
        raise not_found("email")
    detail = functools.partial(_detail, bytes(row["raw"]), row["header_end"], email_id, remote == "block")
    parsed, headers, html = await asyncio.to_thread(detail)
    body = summary(row, await user_labels(request))
    own = await _sent_by_user(request, row)
    if not own:
        headers = [h for h in headers if h["name"].lower() != "bcc"]
    body |= {
        "mailboxName": mailbox_name(row["mailbox_name"]),
        "cc": [person(a) for a in row["cc_addr"] or []],
        "bcc": [person(a) for a in row["bcc_addr"] or []] if own else [],
        "replyTo": [{"name": a.name, "email": a.email} for a in parsed.reply_to],
        "messageId": row["message_id"],
        "inReplyTo": row["in_reply_to"],
        "references": list(row["references"] or []),
        "headers": headers,
        "textBody": parsed.text_body,
        "htmlBody": html.html if html else None,
        "remoteContentBlocked": html.remote_blocked if html else 0,
        "attachments": _attachments(row),
        "authentication": authentication(headers, state(request).cfg),
        "spam": spam_verdict(headers),
    }
    return web.json_response(body)


def authentication(headers: list[dict[str, str]], cfg: Config) -> dict[str, Any] | None:
    """The ``authentication`` block: our own Authentication-Results field (relate.mailauth), read back."""
    ours = verdict.authserv_id(cfg)
    entries = authres.find_ours([(h["name"], h["value"]) for h in headers], ours)
    if entries is None:
        return None

    def first(method: str, *, best: bool = False) -> str | None:
        found = [e.result for e in entries if e.method == method]
        if best and "pass" in found:
            return "pass"
        return found[0] if found else None

    return {
        "authservId": ours,
        "spf": first("spf"),
        "dkim": first("dkim", best=True),
        "dmarc": first("dmarc"),
        "arc": first("arc"),
        "auth": first("auth"),
        "results": [
            {"method": e.method, "result": e.result, "reason": e.reason or None, "properties": e.properties}
            for e in entries
        ],
    }


def spam_verdict(headers: list[dict[str, str]]) -> dict[str, Any] | None:
    """The ``spam`` block: the X-Spam-* fields relate.spam wrote on arrival (a sender's own are removed from
    every message arriving over port 25, filter on or off), read back; None when the message has none."""
    status = next((h["value"] for h in headers if h["name"].lower() == "x-spam-status"), None)
    if status is None:
        return None
    symbols = next((h["value"] for h in headers if h["name"].lower() == "x-spam-symbols"), None)
    return spam_filter.read_back(status, symbols)


@routes.get("/api/emails/{id}/raw")
@requires(READ)
async def get_raw(request: web.Request) -> web.Response:
    data = await store.raw(state(request).pool, principal(request).user_id, path_id(request))
    if data is None:
        raise not_found("email")
    return web.Response(body=data, content_type="message/rfc822")


def _disposition(filename: str | None, inline: bool) -> str:
    kind = "inline" if inline else "attachment"
    if not filename:
        return kind
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "'").replace("\\", "_")
    ascii_name = "".join(ch if ch.isprintable() else "_" for ch in ascii_name)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


@routes.get("/api/emails/{id}/attachments/{n}")
@requires(READ)
async def get_attachment(request: web.Request) -> web.Response:
    row = await store.get(state(request).pool, principal(request).user_id, path_id(request))
    if row is None:
        raise not_found("email")
    try:
        n = int(request.match_info["n"])
    except ValueError:
        raise not_found("attachment") from None
    items = row["attachments"] or []
    if not 0 <= n < len(items):
        raise not_found("attachment")
    item = items[n]
    data = await asyncio.to_thread(part_content, bytes(row["raw"]), item["part"])
    if data is None:
        raise not_found("attachment")
    content_type = item.get("contentType") or "application/octet-stream"
    return web.Response(
        body=data,
        headers={
            "Content-Type": content_type if "/" in content_type else "application/octet-stream",
            # Never let a browser render mail content from the API's origin.
            "Content-Disposition": _disposition(item.get("filename"), False),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
        },
    )


def _flag(value: Any) -> str:
    if not isinstance(value, str):
        raise invalid("flags must be strings")
    if value.startswith("\\"):
        flag = SYSTEM_FLAGS.get(value.lower())
        if flag is None:
            raise invalid(f"unknown system flag {value[:40]}")
        return flag
    if not _KEYWORD.match(value):
        raise invalid(f"not a valid keyword: {value[:40]!r}")
    return value


def _flags(value: Any) -> list[str]:
    if not isinstance(value, list) or len(value) > 100:
        raise invalid("flags must be a list (at most 100)")
    return list(dict.fromkeys(_flag(f) for f in value))


async def _target(request: web.Request, value: Any) -> dict[str, Any]:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise invalid("mailbox must be a mailbox id or name")
    return await mailbox_ref(request, str(value))


@routes.patch("/api/emails/{id}")
@requires(WRITE)
async def patch_email(request: web.Request) -> web.Response:
    data = await json_body(request)
    unknown = set(data) - {"isRead", "flags", "mailbox"}
    if unknown:
        raise invalid(f"unknown fields: {', '.join(sorted(unknown))}")
    pool = state(request).pool
    user_id = principal(request).user_id
    email_id = path_id(request)
    found = await store.locate(pool, user_id, email_id)
    if found is None:
        raise not_found("email")
    flags = _flags(data["flags"]) if "flags" in data else None
    if "isRead" in data:
        if not isinstance(data["isRead"], bool):
            raise invalid("isRead must be true or false")
        base = flags if flags is not None else list(found["flags"])
        flags = [f for f in base if f != "\\Seen"] + (["\\Seen"] if data["isRead"] else [])
    target = await _target(request, data["mailbox"]) if "mailbox" in data else None
    if flags is not None and not await mail_service.set_flags(pool, user_id, email_id, flags):
        raise not_found("email")
    if target is not None and target["id"] != found["mailbox_id"]:
        moved = await mail_service.apply(pool, user_id, "move", [email_id], target_id=target["id"], bulk=False)
        if not moved.ids:
            raise not_found("email")
    return await _email_now(request, email_id)


async def _email_now(request: web.Request, email_id: int) -> web.Response:
    """The answer of a change to one email: its summary as it is now."""
    rows = await store.summaries(state(request).pool, [email_id])
    if not rows:
        raise not_found("email")
    return web.json_response(summary(rows[0], await user_labels(request)))


@routes.put("/api/emails/{id}/labels/{labelId}")
@requires(WRITE)
async def add_label(request: web.Request) -> web.Response:
    return await _label_one(request, "label")


@routes.delete("/api/emails/{id}/labels/{labelId}")
@requires(WRITE)
async def remove_label(request: web.Request) -> web.Response:
    return await _label_one(request, "unlabel")


async def _label_one(request: web.Request, action: str) -> web.Response:
    """Add or remove one label on one email (its keyword: IMAP sessions and the hub hear of it as a flag change)."""
    pool = state(request).pool
    user_id = principal(request).user_id
    email_id = path_id(request)
    label_id = path_id(request, "labelId")
    keyword = await label_service.keyword_of(pool, user_id, label_id)
    done = await mail_service.apply(pool, user_id, action, [email_id], keyword=keyword, bulk=False)
    if not done.ids:
        raise not_found("email")
    return await _email_now(request, email_id)


@routes.delete("/api/emails/{id}")
@requires(WRITE)
async def delete_email(request: web.Request) -> web.Response:
    email_id = path_id(request)
    done = await mail_service.apply(state(request).pool, principal(request).user_id, "delete", [email_id], bulk=False)
    if not done.ids:
        raise not_found("email")
    if done.removed:
        return web.json_response({"deleted": True, "id": email_id})
    return web.json_response({"deleted": False, "id": email_id, "mailboxId": done.mailbox_id})


# --- bulk ---------------------------------------------------------------------------------------------

_BULK_FIELDS = {"action", "ids", "query", "mailbox", "label"}
_QUERY_FIELDS = {"q", "mailbox", "from", "to", "after", "before", "hasAttachments", "isRead", "label"}


def _text_field(query: dict[str, Any], name: str, limit: int) -> str | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise invalid(f"query.{name} must be a string of at most {limit} characters")
    return value


def _bool_field(query: dict[str, Any], name: str) -> bool | None:
    value = query.get(name)
    if value is not None and not isinstance(value, bool):
        raise invalid(f"query.{name} must be true, false or null")
    return value


def _date_field(query: dict[str, Any], name: str) -> datetime | None:
    raw = _text_field(query, name, 64)
    try:
        return None if raw is None else utc_datetime(raw)
    except (ValueError, OverflowError):
        raise invalid(f"query.{name} must be an ISO 8601 date or date-time from year 1 to 9999") from None


async def _matches(request: web.Request, query: Any) -> list[int]:
    """The ids a bulk action's search picks (the search of GET /api/emails/search, as JSON); 422 past the cap."""
    if not isinstance(query, dict):
        raise invalid("query must be an object")
    unknown = set(query) - _QUERY_FIELDS
    if unknown:
        raise invalid(f"unknown query fields: {', '.join(sorted(unknown))}")
    mailbox = query.get("mailbox")
    box_id = (await _target(request, mailbox))["id"] if mailbox is not None else None
    label = query.get("label")
    user_id = principal(request).user_id
    keyword = None if label is None else await label_service.keyword_of(state(request).pool, user_id, label)
    cap = mail_service.MAX_BULK
    rows, _total, exact = await store.search(
        state(request).pool,
        principal(request).user_id,
        query=(_text_field(query, "q", 1000) or "").strip() or None,
        mailbox_id=box_id,
        sender=_text_field(query, "from", 1000),
        recipient=_text_field(query, "to", 1000),
        after=_date_field(query, "after"),
        before=_date_field(query, "before"),
        has_attachments=_bool_field(query, "hasAttachments"),
        is_read=_bool_field(query, "isRead"),
        offset=0,
        limit=min(cap, store.SEARCH_CAP),
        keyword=keyword,
    )
    if not exact:
        raise invalid(f"the query matches more than {cap} emails; narrow it (a bulk action takes at most {cap})")
    return [r["id"] for r in rows]


def _ids(value: Any) -> list[int]:
    cap = mail_service.MAX_BULK
    if (
        not isinstance(value, list)
        or not 0 < len(value) <= cap
        or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**63 for i in value)
    ):
        raise invalid(f"ids must be a list of 1 to {cap} email ids")
    return value


@routes.post("/api/emails/bulk")
@requires(WRITE)
async def bulk(request: web.Request) -> web.Response:
    data = await json_body(request)
    unknown = set(data) - _BULK_FIELDS
    if unknown:
        raise invalid(f"unknown fields: {', '.join(sorted(unknown))}")
    action = data.get("action")
    if action not in mail_service.ACTIONS:
        raise invalid(f"action must be one of {', '.join(mail_service.ACTIONS)}")
    if ("ids" in data) == ("query" in data):
        raise invalid("give either ids or query")
    if (action == "move") != ("mailbox" in data):
        raise invalid("mailbox is required for move, and only for move")
    labelling = action in mail_service.LABEL_ACTIONS
    if labelling != ("label" in data):
        raise invalid("label is required for label and unlabel, and only for them")
    target = await _target(request, data["mailbox"]) if action == "move" else None
    pool = state(request).pool
    user_id = principal(request).user_id
    keyword = await label_service.keyword_of(pool, user_id, data["label"]) if labelling else None
    ids = _ids(data["ids"]) if "ids" in data else await _matches(request, data["query"])
    done = await mail_service.apply(
        pool, user_id, action, ids, target_id=None if target is None else target["id"], keyword=keyword
    )
    return web.json_response(
        {
            "action": action,
            "count": len(done.ids),
            "ids": done.ids,
            "notFound": done.not_found,
            "mailboxId": done.mailbox_id,
            "removed": list(done.removed),
        }
    )


__all__ = ["ApiError", "routes"]
