"""Threads (conversations): the user's threads, latest arrival first, and one thread's messages, oldest first.

Reads need ``api:read``. A thread spans the user's folders (store/threads.py
says how messages are threaded); each email's ``threadId`` names its thread,
and ``GET /api/emails?collapse=thread`` lists a folder one thread at a time.
A label is put on (or taken off) every email of a thread at once with ``api:write``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relate.api.app import page_of, paging, path_id, state
from relate.api.errors import not_found
from relate.api.security import READ, WRITE, principal, requires
from relate.api.shapes import iso, person, summary
from relate.services import labels as label_service
from relate.services import threads as service

routes = web.RouteTableDef()


def thread_shape(thread: service.Thread) -> dict[str, Any]:
    """The shape of a thread (an item of GET /api/threads; GET /api/threads/{id} adds its emails)."""
    f = thread.figures
    return {
        "id": f.id,
        "subject": f.subject,
        "messageCount": f.message_count,
        "unreadCount": f.unread_count,
        "isFlagged": f.flagged,
        "attachmentCount": f.attachment_count,
        "participants": [person(p) for p in f.participants],
        "snippet": thread.snippet,
        "firstReceived": iso(f.first_at),
        "lastReceived": iso(f.last_at),
        "latestEmailId": f.latest_id,
        "mailboxIds": list(f.mailbox_ids),
    }


@routes.get("/api/threads")
@requires(READ)
async def list_threads(request: web.Request) -> web.Response:
    page, size = paging(request)
    found, total = await service.page(state(request).pool, principal(request).user_id, (page - 1) * size, size)
    return web.json_response(page_of([thread_shape(t) for t in found], page, size, total))


@routes.get("/api/threads/{id}")
@requires(READ)
async def get_thread(request: web.Request) -> web.Response:
    thread_id = path_id(request)
    page, size = paging(request)
    found = await service.one(state(request).pool, principal(request).user_id, thread_id, (page - 1) * size, size)
    if found is None:
        raise not_found("thread")
    thread, rows = found
    labels = await label_service.by_keyword(state(request).pool, principal(request).user_id)
    items = [summary(r, labels) for r in rows]
    return web.json_response(thread_shape(thread) | page_of(items, page, size, thread.figures.message_count))


@routes.put("/api/threads/{id}/labels/{labelId}")
@requires(WRITE)
async def label_thread(request: web.Request) -> web.Response:
    return await _label(request, "label")


@routes.delete("/api/threads/{id}/labels/{labelId}")
@requires(WRITE)
async def unlabel_thread(request: web.Request) -> web.Response:
    return await _label(request, "unlabel")


async def _label(request: web.Request, action: str) -> web.Response:
    pool, user_id = state(request).pool, principal(request).user_id
    thread_id = path_id(request)
    keyword = await label_service.keyword_of(pool, user_id, path_id(request, "labelId"))
    count = await service.label(pool, user_id, thread_id, action, keyword)
    if count is None:
        raise not_found("thread")
    return web.json_response({"threadId": thread_id, "count": count})
