"""The change feed: PostgreSQL LISTEN/NOTIFY for every daemon, in one place, surviving any outage.

Channels, and what their payloads say (sent from the transaction that makes
the change, so a listener hears of it exactly when it commits):

- ``relate_mail`` (:class:`MailChange`): something changed in a mailbox:
  ``{"event": "new"|"flags"|"expunge"|"created"|"deleted"|"renamed"|"subscriptions",
  "user", "mailbox", "modseq"}`` plus ``"id"``, ``"uid"`` of a message stored
  (and ``"at"``, the database's clock then, from ingest: the notification lag metric,
  and ``"kind": "delivery"`` when the message came to its owner from outside: an SMTP
  delivery, a local delivery by the queue, a bounce; absent when the owner made it, as
  APPEND, a Sent or Drafts copy, an import: web push is for deliveries only),
  or ``"ids"`` of messages expunged ("subscriptions" has mailbox 0: a user's
  subscribed names changed). A move's "new" names the source (``"from"``) and
  its "expunge" the target (``"to"``): the messages keep their ids. A change
  made by a bulk action (services/mail.py) carries ``"bulk"`` (the action),
  and the action ends with one ``{"event": "bulk", "mailbox": 0, "action",
  "count", "mailboxes"}``: a listener that reports to people (the API's hub)
  can sum it up once, while IMAP sessions follow each mailbox's changes as
  ever. ``{"event": "label", "mailbox": 0, "change": "created"|"updated"|"deleted",
  "label": {"id", "name", "color", "keyword"}}``: one of the user's labels
  changed (store/labels.py; its messages' keywords change as "flags" events).
  ``{"event": "threads", "mailbox": 0, "id", "ids"}``: the user's
  threads ``ids`` were merged into thread ``id`` (store/threads.py). Written
  by store/messages.py, store/imap_messages.py, store/mailboxes.py,
  store/labels.py and store/threads.py; a listener ignores events it does
  not know.
- ``relate_delivery`` (:class:`DeliveryChange`): an outbound message's status
  changed, ``{"user", "id", "status"}`` (store/queue.py, store/outbound.py).
- ``relate_queue`` (:class:`QueueChange`): the outbound queue has work now;
  the payload is free text (store/outbound.py, store/queue.py, store/drafts.py).

Policy: a process holds ONE LISTEN connection, made with :func:`db.connect`
outside the pool (LISTEN pins a connection; a full pool must not silence
it), listening on every channel above; each service of the process
subscribes, at any time, to the channels it needs (a payload nobody wants
is dropped unparsed).
The connection is checked every ``PING_INTERVAL`` (a dead peer does not
always close the socket). When it is lost (a PostgreSQL restart or failover
of any length, a network cut), one ``change-feed-lost`` line is logged, it is
made again with short backoff (at most ``RETRY_DELAYS[-1]`` between tries, so
notifications resume within a few seconds of the database being back), and
one ``change-feed-restored`` line says how long it was down. Then every
subscriber's ``on_resync`` runs, because changes made meanwhile were not
heard: IMAP sessions compare their mailbox with the database, the API tells
its clients to refetch, the delivery daemon looks at its queue. While it is
down, :meth:`ChangeFeed.problem` says so, and the daemon's heartbeat carries
that to ``relatectl status`` (a degraded daemon).

Callbacks run on the event loop and must not block; a callback that raises
is logged and does not stop the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg

from relate.config import DatabaseConfig
from relate.store import db

log = logging.getLogger("relate.store.changes")

MAIL = "relate_mail"
# A transaction of a bulk action sets this (``set_config(BULK_SETTING, action, true)``); the message changes it
# makes carry the action as ``"bulk"`` (SQL: BULK_MARK, NULL outside one).
BULK_SETTING = "relate.bulk"
BULK_MARK = f"nullif(current_setting('{BULK_SETTING}', true), '')"
# A "new" message change's "kind" when the message was delivered to its owner (store/messages.py ingest).
DELIVERY_KIND = "delivery"
DELIVERY = "relate_delivery"
QUEUE = "relate_queue"

# How the feed's connection shows in pg_stat_activity.
APPLICATION_NAME = "relate-change-feed"
PING_INTERVAL = 10.0
PING_TIMEOUT = 5.0
RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class MailChange:
    event: str  # new | flags | expunge | created | deleted | renamed | subscriptions | bulk | threads
    user: int
    mailbox: int
    modseq: int | None = None
    id: int | None = None  # a message stored ("new" from ingest); "threads": the thread kept
    uid: int | None = None
    ids: tuple[int, ...] | None = None  # messages expunged, when listed
    at: float | None = None  # "new" from ingest: the database's clock when it was stored (Unix time)
    source: int | None = None  # "new" of a move: the mailbox the messages came from (they keep their ids)
    target: int | None = None  # "expunge" of a move: the mailbox the messages went to
    bulk: str | None = None  # the bulk action a message change is part of; the action's own event for "bulk"
    count: int | None = None  # "bulk": messages the action changed
    mailboxes: tuple[int, ...] | None = None  # "bulk": the mailboxes it touched
    change: str | None = None  # "label": created, updated or deleted
    label: dict[str, Any] | None = None  # "label": the label (id, name, color, keyword)
    kind: str | None = None  # "new" from ingest: "delivery" (mail that came to its owner), else None

    @property
    def delivered(self) -> bool:
        """A message stored by a delivery (SMTP, the queue, a bounce), not by its owner (APPEND, Sent copy)."""
        return self.kind == DELIVERY_KIND


@dataclass(frozen=True)
class DeliveryChange:
    user: int
    id: int  # the outbound email
    status: str


@dataclass(frozen=True)
class QueueChange:
    reason: str


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _object(payload: str) -> dict[str, Any] | None:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def parse_mail(payload: str) -> MailChange | None:
    """A ``relate_mail`` payload, or None if it is not one."""
    data = _object(payload)
    if data is None:
        return None
    event, user, mailbox = data.get("event"), _int(data.get("user")), _int(data.get("mailbox"))
    if not isinstance(event, str) or user is None or mailbox is None:
        return None
    ids = data.get("ids")
    listed = tuple(i for i in ids if _int(i) is not None) if isinstance(ids, list) else None
    modseq, message_id, uid = _int(data.get("modseq")), _int(data.get("id")), _int(data.get("uid"))
    at = data.get("at")
    stamp = float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None
    source, target = _int(data.get("from")), _int(data.get("to"))
    bulk = data.get("bulk") if event != "bulk" else data.get("action")
    boxes = data.get("mailboxes")
    touched = tuple(i for i in boxes if _int(i) is not None) if isinstance(boxes, list) else None
    return MailChange(
        event,
        user,
        mailbox,
        modseq,
        message_id,
        uid,
        listed,
        stamp,
        source,
        target,
        bulk if isinstance(bulk, str) else None,
        _int(data.get("count")),
        touched,
        data.get("change") if isinstance(data.get("change"), str) else None,
        data.get("label") if isinstance(data.get("label"), dict) else None,
        data.get("kind") if isinstance(data.get("kind"), str) else None,
    )


def parse_delivery(payload: str) -> DeliveryChange | None:
    """A ``relate_delivery`` payload, or None if it is not one."""
    data = _object(payload)
    if data is None:
        return None
    user, email_id, status = _int(data.get("user")), _int(data.get("id")), data.get("status")
    if user is None or email_id is None or not isinstance(status, str):
        return None
    return DeliveryChange(user, email_id, status)


def parse_queue(payload: str) -> QueueChange:
    return QueueChange(payload)


T = TypeVar("T")


@dataclass(frozen=True)
class Channel(Generic[T]):
    name: str
    parse: Callable[[str], T | None]


MAIL_CHANNEL: Channel[MailChange] = Channel(MAIL, parse_mail)
DELIVERY_CHANNEL: Channel[DeliveryChange] = Channel(DELIVERY, parse_delivery)
QUEUE_CHANNEL: Channel[QueueChange] = Channel(QUEUE, parse_queue)
CHANNELS: tuple[Channel[Any], ...] = (MAIL_CHANNEL, DELIVERY_CHANNEL, QUEUE_CHANNEL)


class ChangeFeed:
    def __init__(self, db_cfg: DatabaseConfig) -> None:
        self._db_cfg = db_cfg
        self._subscribers: dict[str, list[Callable[[Any], None]]] = {c.name: [] for c in CHANNELS}
        self._parsers: dict[str, Callable[[str], Any]] = {c.name: c.parse for c in CHANNELS}
        self._resync: list[Callable[[], None]] = []
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._down_since: float | None = None  # monotonic time the feed went down, None while it listens
        self._error = ""

    # -- subscribing ---------------------------------------------------------

    def subscribe(self, channel: Channel[T], callback: Callable[[T], None]) -> Callable[[], None]:
        """Call ``callback`` with each parsed payload of ``channel``; returns the unsubscribe function."""
        callbacks = self._subscribers[channel.name]
        callbacks.append(callback)
        return lambda: callbacks.remove(callback) if callback in callbacks else None

    @property
    def wanted(self) -> bool:
        """Whether anything subscribed (a process with no subscriber needs no feed)."""
        return any(self._subscribers.values()) or bool(self._resync)

    def on_resync(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after every reconnect: changes made while the feed was down were missed."""
        self._resync.append(callback)
        return lambda: self._resync.remove(callback) if callback in self._resync else None

    # -- state -----------------------------------------------------------------

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def problem(self) -> str | None:
        """None while listening; else what is wrong and for how long (for the heartbeat and logs)."""
        if self._task is None or self.listening:
            return None
        down = 0.0 if self._down_since is None else time.monotonic() - self._down_since
        return f"change feed down for {down:.0f}s ({self._error or 'connecting'}): no push, IDLE or hub events"

    async def wait_listening(self, seconds: float) -> bool:
        """Whether the feed listens, waiting up to ``seconds`` for it."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), seconds)
        return self.listening

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, wait: float = 5.0) -> None:
        """Start listening; waits up to ``wait`` seconds for the first LISTEN, so early changes are heard."""
        if self._task is None:
            self._down_since = time.monotonic()
            self._task = asyncio.get_running_loop().create_task(self._supervise())
        await self.wait_listening(wait)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._listening.clear()

    async def _supervise(self) -> None:
        failures = 0
        reconnecting = False
        while True:
            try:
                conn = await db.connect(self._db_cfg, application_name=APPLICATION_NAME)
            except db.ERRORS as exc:
                self._error = _first_line(exc)
                if failures == 0 and not reconnecting:
                    log.warning("change-feed-failed error=%s; retrying", self._error)
                await asyncio.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)])
                failures += 1
                continue
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                for name in list(self._subscribers):
                    await conn.add_listener(name, self._dispatch)
                self._conn = conn
                failures = 0
                if reconnecting:
                    down = time.monotonic() - (self._down_since or time.monotonic())
                    log.info("change-feed-restored down=%.1fs", down)
                self._down_since = None
                self._error = ""
                self._listening.set()
                if reconnecting:
                    self._run_resync()
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), PING_INTERVAL)
                        break
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), PING_TIMEOUT)
                self._error = "connection closed"
            except db.ERRORS as exc:
                self._error = _first_line(exc)
            finally:
                self._conn = None
                if self._listening.is_set():
                    self._down_since = time.monotonic()
                self._listening.clear()
                if not conn.is_closed():
                    conn.terminate()
            # One line per outage; the retries that follow are silent until it is back.
            if not reconnecting or failures == 0:
                log.warning("change-feed-lost error=%s; reconnecting", self._error)
            reconnecting = True
            await asyncio.sleep(RETRY_DELAYS[0])

    def _dispatch(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        callbacks = self._subscribers.get(channel)
        if not callbacks:
            return
        change = self._parsers[channel](payload)
        if change is None:
            log.debug("change-feed-ignored channel=%s payload=%.200s", channel, payload)
            return
        if isinstance(change, MailChange) and change.at is not None:
            from relate.runtime import metrics  # here: relatectl imports the store, and prometheus_client costs 50 ms

            # Across hosts this includes the clocks' difference from the database server's.
            metrics.NOTIFICATION_LAG.observe(max(time.time() - change.at, 0.0))
        for callback in list(callbacks):
            try:
                callback(change)
            except Exception:  # one subscriber's bug must not silence the others
                log.exception("change-feed-callback-failed channel=%s", channel)

    def _run_resync(self) -> None:
        for callback in list(self._resync):
            try:
                callback()
            except Exception:  # as in _dispatch
                log.exception("change-feed-resync-failed")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
