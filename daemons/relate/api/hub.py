"""Real time: the WebSocket hub (``GET /hubs/email``), fed by the change feed.

Policy:

- A hub connection is authenticated like any user route (``api:read``; the
  key in the header, or as ``access_token`` in the query for browsers) and
  receives only its own user's events, as JSON text frames ``{"type",
  "data"}``: ``NewEmail`` (the listing shape of the message),
  ``EmailUpdated`` (``id, mailboxId, flags, isRead``), ``EmailDeleted``
  (``ids, mailboxId``), ``EmailMoved`` (``ids, mailboxId, fromMailboxId``:
  moved messages keep their ids), ``UnreadCountChanged`` (``mailboxId, unread``),
  ``BulkChanged`` (``action, count, mailboxIds``: one event for a bulk
  action of up to 1,000 messages; refetch those folders, or every folder
  when ``mailboxIds`` is null: more than 300 were touched),
  ``MailboxChanged`` (``change`` created, renamed or deleted, ``id``, and
  ``name, specialUse`` unless deleted; from REST or IMAP alike),
  ``LabelChanged`` (``change`` created, updated or deleted, and the
  label's ``id, name, color, keyword``; a label put on or taken off an
  email is an ``EmailUpdated``: its flags hold the label's keyword),
  ``DeliveryStatusChanged`` (``id, status``, an outbound email) and
  ``Resync`` (``reason``, and ``mailboxId`` when one mailbox is meant):
  refetch, because what changed is too much to list (``bulk``), folders
  were deleted or renamed (``mailboxes``), or events may have been missed
  (``reconnected``, ``lagging``). The hub is one-way: what a client sends is
  read and ignored.
- Where events come from: every change to mail, whatever made it (IMAP,
  POP3, REST, SMTP delivery, on any host), is announced on the change feed's
  ``relate_mail`` channel; outbound delivery status on ``relate_delivery``
  (store/changes.py). The process's one change feed carries both, not a
  connection per WebSocket, so a client of any instance hears every change.
  When the feed has been down (a database restart), every client gets
  ``Resync`` once it is back (changes made meanwhile were missed).
- The feed is the one announce: no daemon calls the API. A new message's
  NewEmail comes from its ``new`` change, whoever stored it (a delivery or
  the owner's own APPEND or Sent copy alike); web push hears the same feed
  and pushes deliveries only, once per message across every API process
  (api/push.py). NewEmail is sent once per message id (the ids recently
  announced are remembered: a copy's rows are read by modseq).
- Work per notification is done only for users with a connection here.
  Notifications of one user are handled in order, by one task per user;
  unread counts are computed once per batch and mailbox.
- A slow client never stalls the others: its outgoing events wait in a
  bounded queue, and a client that lets it overflow is disconnected (1008),
  aborted if it cannot even take the close frame. At shutdown every
  client gets a clean close (1001).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from typing import Any

import asyncpg
from aiohttp import WSCloseCode, web

from relate.api.app import STATE, state
from relate.api.errors import ApiError
from relate.api.security import READ, principal, requires
from relate.api.shapes import mailbox_name, summary
from relate.store import db, events
from relate.store.changes import DELIVERY_CHANNEL, MAIL_CHANNEL, ChangeFeed, DeliveryChange, MailChange

log = logging.getLogger("relate.api.hub")

routes = web.RouteTableDef()

# Events waiting to be sent to one client; more and it is too slow to keep.
CLIENT_QUEUE = 1000
# Hub connections of one user on one instance.
MAX_CLIENTS_PER_USER = 50
# Rows of one change sent one by one; a bigger change is a Resync of that mailbox.
BULK = 100
# Notifications of one user waiting to be handled; beyond that the user gets a Resync instead.
PENDING_LIMIT = 5000
# Message ids announced as NewEmail, remembered to send each once.
RECENT_IDS = 50_000
CLOSE_TIMEOUT = 2.0


def event_text(kind: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "data": data}, separators=(",", ":"))


class Client:
    """One hub connection: its user and its bounded queue of outgoing frames."""

    def __init__(self, ws: web.WebSocketResponse, user_id: int, request: web.Request) -> None:
        self.ws = ws
        self.user_id = user_id
        self._transport = request.transport
        self._queue: asyncio.Queue[str] = asyncio.Queue(CLIENT_QUEUE)
        self._pump = asyncio.get_running_loop().create_task(self._send_loop())
        self._closer: asyncio.Task[None] | None = None

    @property
    def closing(self) -> bool:
        return self._closer is not None

    def offer(self, text: str) -> None:
        """Queue one frame; a client whose queue is full is disconnected."""
        if self._closer is not None:
            return
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("hub-client-dropped user=%d reason=slow queued=%d", self.user_id, self._queue.qsize())
            self.close(WSCloseCode.POLICY_VIOLATION, b"too slow: events were not read in time")

    async def _send_loop(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                await self.ws.send_str(await self._queue.get())

    def close(self, code: int, message: bytes) -> asyncio.Task[None]:
        if self._closer is None:
            self._pump.cancel()
            self._closer = asyncio.get_running_loop().create_task(self._close(code, message))
        return self._closer

    async def _close(self, code: int, message: bytes) -> None:
        clean = False
        try:
            # A client that does not read cannot take the close frame either: give up after a moment.
            await asyncio.wait_for(self.ws.close(code=code, message=message), CLOSE_TIMEOUT)
            clean = True
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            # Also when cancelled: a transport merely closed would wait for its unsent buffer forever.
            if not clean and self._transport is not None:
                self._transport.abort()

    async def finish(self) -> None:
        """Stop sending (the connection ended)."""
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump


class Hub:
    """The hub clients of this process, by user, and what the change feed tells them."""

    def __init__(self, pool: asyncpg.Pool, feed: ChangeFeed) -> None:
        self.pool = pool
        self.feed = feed
        feed.subscribe(MAIL_CHANNEL, self._on_mail)
        feed.subscribe(DELIVERY_CHANNEL, self._on_delivery)
        feed.on_resync(lambda: self.broadcast("Resync", {"reason": "reconnected"}))
        self._clients: dict[int, set[Client]] = {}
        self._recent: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._pending: dict[int, collections.deque[MailChange]] = {}
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._closing = False
        self._last_db_warning = 0.0

    # -- lifecycle -------------------------------------------------------------

    async def close_clients(self) -> None:
        """Refuse new clients and close every connection cleanly (1001 Going Away)."""
        self._closing = True
        closers = [c.close(WSCloseCode.GOING_AWAY, b"server shutdown") for cs in self._clients.values() for c in cs]
        if closers:
            await asyncio.gather(*closers, return_exceptions=True)

    async def stop(self) -> None:
        await self.close_clients()
        for task in list(self._workers.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- clients ---------------------------------------------------------------

    def client_count(self) -> int:
        return sum(len(cs) for cs in self._clients.values())

    def join(self, ws: web.WebSocketResponse, user_id: int, request: web.Request) -> Client:
        client = Client(ws, user_id, request)
        self._clients.setdefault(user_id, set()).add(client)
        return client

    @property
    def closing(self) -> bool:
        return self._closing

    def accepts(self, user_id: int) -> bool:
        return not self._closing and len(self._clients.get(user_id, ())) < MAX_CLIENTS_PER_USER

    async def leave(self, client: Client) -> None:
        clients = self._clients.get(client.user_id)
        if clients is not None:
            clients.discard(client)
            if not clients:
                del self._clients[client.user_id]
        await client.finish()

    def publish(self, user_id: int, kind: str, data: dict[str, Any]) -> None:
        """Send one event to every connection of the user here."""
        clients = self._clients.get(user_id)
        if not clients:
            return
        text = event_text(kind, data)
        for client in list(clients):
            client.offer(text)

    def broadcast(self, kind: str, data: dict[str, Any]) -> None:
        text = event_text(kind, data)
        for clients in list(self._clients.values()):
            for client in list(clients):
                client.offer(text)

    # -- NewEmail, once per message ----------------------------------------------

    def claim(self, email_id: int) -> bool:
        """True the first time a message id is announced (lately); False after."""
        if email_id in self._recent:
            return False
        self._recent[email_id] = None
        if len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)
        return True

    # -- notifications -----------------------------------------------------------

    def _on_mail(self, change: MailChange) -> None:
        if change.user not in self._clients:
            return
        pending = self._pending.setdefault(change.user, collections.deque())
        if len(pending) >= PENDING_LIMIT:
            # Hopelessly behind: what is queued is worth less than one resync.
            pending.clear()
            pending.append(MailChange("lagging", change.user, 0))
        else:
            pending.append(change)
        if change.user not in self._workers:
            self._workers[change.user] = asyncio.get_running_loop().create_task(self._work(change.user))

    def _on_delivery(self, change: DeliveryChange) -> None:
        self.publish(change.user, "DeliveryStatusChanged", {"id": change.id, "status": change.status})

    async def _work(self, user_id: int) -> None:
        """Handle the user's notifications in order, in batches; unread counts once per batch and mailbox."""
        try:
            while (pending := self._pending.get(user_id)) and user_id in self._clients:
                batch = [pending.popleft() for _ in range(min(len(pending), 200))]
                touched: set[int] = set()
                try:
                    for event in batch:
                        await self._apply(user_id, event, touched)
                    if touched and user_id in self._clients:
                        counts = await events.unread(self.pool, sorted(touched))
                        for mailbox_id, unread in sorted(counts.items()):
                            self.publish(user_id, "UnreadCountChanged", {"mailboxId": mailbox_id, "unread": unread})
                except db.ERRORS as exc:
                    now = time.monotonic()
                    if now - self._last_db_warning > 60:
                        self._last_db_warning = now
                        log.warning("hub-event-failed user=%d error=%s", user_id, type(exc).__name__)
                    self.publish(user_id, "Resync", {"reason": "lagging"})
        finally:
            del self._workers[user_id]
            if not self._pending.get(user_id) or user_id not in self._clients:
                self._pending.pop(user_id, None)

    async def _apply(self, user_id: int, event: MailChange, touched: set[int]) -> None:
        kind = event.event
        mailbox_id = event.mailbox
        if event.bulk is not None and kind in ("new", "flags", "expunge"):
            # Part of a bulk action: its "bulk" event, last in its transaction, sums it up.
            touched.add(mailbox_id)
            return
        if kind == "new":
            touched.add(mailbox_id)
            if event.source is not None:
                touched.add(event.source)  # a move: the source's "expunge" tells of it (EmailMoved)
                return
            if event.id is not None:
                if self.claim(event.id):
                    row = await events.new_email(self.pool, event.id)
                    if row is not None:
                        self.publish(user_id, "NewEmail", summary(row))
                return
            # A copy or move: the new rows are the target's rows at the change's modseq.
            rows = await events.at_modseq(self.pool, mailbox_id, event.modseq or 0, BULK + 1)
            if len(rows) > BULK:
                self.publish(user_id, "Resync", {"reason": "bulk", "mailboxId": mailbox_id})
                return
            for row in rows:
                if self.claim(row["id"]):
                    self.publish(user_id, "NewEmail", summary(row))
        elif kind == "flags":
            touched.add(mailbox_id)
            rows = await events.at_modseq(self.pool, mailbox_id, event.modseq or 0, BULK + 1)
            if len(rows) > BULK:
                self.publish(user_id, "Resync", {"reason": "bulk", "mailboxId": mailbox_id})
                return
            for row in rows:
                flags = list(row["flags"])
                data = {"id": row["id"], "mailboxId": mailbox_id, "flags": flags, "isRead": "\\Seen" in flags}
                self.publish(user_id, "EmailUpdated", data)
        elif kind == "expunge":
            touched.add(mailbox_id)
            if event.target is not None:
                # A move: the messages keep their ids; one event names where they went (read from the payload,
                # so a message changed again since is still told of).
                touched.add(event.target)
                if event.ids is not None:
                    moved = {"ids": list(event.ids), "mailboxId": event.target, "fromMailboxId": mailbox_id}
                    self.publish(user_id, "EmailMoved", moved)
                else:
                    for box in (mailbox_id, event.target):
                        self.publish(user_id, "Resync", {"reason": "bulk", "mailboxId": box})
                return
            if event.ids is not None:
                self.publish(user_id, "EmailDeleted", {"ids": list(event.ids), "mailboxId": mailbox_id})
            else:
                self.publish(user_id, "Resync", {"reason": "bulk", "mailboxId": mailbox_id})
        elif kind == "bulk":
            boxes = None if event.mailboxes is None else sorted(set(event.mailboxes))
            data = {"action": event.bulk, "count": event.count or 0, "mailboxIds": boxes}
            self.publish(user_id, "BulkChanged", data)
        elif kind in ("created", "deleted", "renamed"):
            await self._folder(user_id, kind, mailbox_id)
        elif kind == "label" and event.label is not None and event.change is not None:
            self.publish(user_id, "LabelChanged", {"change": event.change, **event.label})
        elif kind == "threads" and event.id is not None and event.ids is not None:
            self.publish(user_id, "ThreadsMerged", {"threadId": event.id, "mergedIds": list(event.ids)})
        elif kind == "lagging":
            self.publish(user_id, "Resync", {"reason": "lagging"})

    async def _folder(self, user_id: int, kind: str, mailbox_id: int) -> None:
        """MailboxChanged for a folder made, renamed or deleted (REST or IMAP); a rename or a deletion is also
        a Resync of the folder list: the folders below a renamed one were renamed with it."""
        row = None if kind == "deleted" else await events.mailbox(self.pool, mailbox_id)
        if row is None and kind != "deleted":
            return  # gone already: its "deleted" follows
        data: dict[str, Any] = {"change": kind, "id": mailbox_id}
        if row is not None:
            data |= {"name": mailbox_name(row["name"]), "specialUse": row["special_use"]}
        self.publish(user_id, "MailboxChanged", data)
        if kind != "created":
            self.publish(user_id, "Resync", {"reason": "mailboxes", "mailboxId": mailbox_id})


HUB = web.AppKey("relate_hub", Hub)


def hub_of(request: web.Request) -> Hub:
    return request.app[HUB]


# RFC 6455 (The WebSocket Protocol): one-way event stream.
@routes.get("/hubs/email")
@requires(READ)
async def email_hub(request: web.Request) -> web.StreamResponse:
    hub = hub_of(request)
    ws = web.WebSocketResponse(
        heartbeat=state(request).cfg.api.websocket_heartbeat or None,
        max_msg_size=64 * 1024,
    )
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "bad_request", "/hubs/email is a WebSocket endpoint: open it with Upgrade: websocket")
    user_id = principal(request).user_id
    if not hub.accepts(user_id):
        if hub.closing:
            raise ApiError(503, "unavailable", "the server is shutting down")
        raise ApiError(429, "rate_limited", f"too many hub connections (at most {MAX_CLIENTS_PER_USER})")
    await ws.prepare(request)
    client = hub.join(ws, user_id, request)
    try:
        async for _msg in ws:
            pass  # one-way: whatever the client sends is ignored (aiohttp answers pings itself)
    finally:
        await hub.leave(client)
    return ws


def setup(app: web.Application) -> None:
    st = app[STATE]
    hub = Hub(st.pool, st.feed)
    app[HUB] = hub

    async def shutdown(_app: web.Application) -> None:
        await hub.close_clients()

    async def cleanup(_app: web.Application) -> None:
        await hub.stop()

    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
