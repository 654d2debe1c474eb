"""The IMAP daemon's listeners, connection limits, and the change feed's fan-out to selected mailboxes."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from typing import Any

import asyncpg

from relate.auth import Authenticator
from relate.config import Config
from relate.imap import commands
from relate.imap.session import Dispatch, ImapSession
from relate.imap.views import MailboxViews
from relate.runtime.budget import MemoryBudget
from relate.runtime.streams import Session, StreamServer
from relate.runtime.tls import TLSRegistry
from relate.store import imap_messages
from relate.store.changes import MAIL_CHANNEL, ChangeFeed, MailChange

log = logging.getLogger("relate.imap")


class ChangeHub:
    """Fans the change feed's mail changes out to the sessions that have that mailbox selected, and (NOTIFY,
    RFC 5465) to the sessions that asked to hear of any mailbox of the change's user.

    A change names a mailbox; every session with it selected then asks the
    database what changed (by modseq and the expunge log) and tells its
    client, so nothing is missed, only late. After the feed reconnects
    (store/changes.py), every watched mailbox counts as changed, since what
    happened meanwhile was not heard, and every NOTIFY session re-reads what it
    reports; while the feed is down, selected mailboxes are all checked every
    ``POLL_WHILE_DOWN`` seconds, so IDLE clients still hear of new mail, a
    little later. Both fan-outs cost a dictionary look-up per change and one
    call per interested session.

    What a change costs the database does not grow with the sessions that hear of it
    (:meth:`changes`, :meth:`claim_recent`): sessions woken by the same change that knew the same
    state share one query, and once a session of this process has taken a mailbox's new messages
    as recent, the others know there is nothing left to take without asking. So a delivery to a
    mailbox that 10,000 sessions watch in IDLE costs one query, not 10,000. Sessions in plain IDLE
    are not even woken (:meth:`_push`): the hub asks once and writes each one's lines itself, a few
    microseconds per session; any other session (under NOTIFY, with a search kept up to date, busy
    with a command) is woken and asks for itself, sharing the query when it can.
    """

    POLL_WHILE_DOWN = 5.0

    def __init__(self, feed: ChangeFeed, pool: asyncpg.Pool) -> None:
        self.feed = feed
        self.pool = pool
        self._watchers: dict[int, set[ImapSession]] = collections.defaultdict(set)
        self._users: dict[int, set[ImapSession]] = collections.defaultdict(set)  # NOTIFY sessions, by user
        self._poller: asyncio.Task[None] | None = None
        # Per watched mailbox: how many changes were heard of (a query started at this count sees every
        # one of them: a notification comes after its commit), the queries under way by what they ask,
        # with the count they started at, and the highest UID some session here took as recent.
        self._heard: dict[int, int] = {}
        self._asking: dict[tuple[int, int, int], tuple[int, asyncio.Future[dict[str, Any]]]] = {}
        self._recent_upto: dict[int, int] = {}
        self._claiming: dict[int, asyncio.Lock] = {}
        self._claims: dict[int, tuple[int, asyncio.Future[tuple[int, int] | None]]] = {}  # under way: (upto, claim)
        self._pushing: set[asyncio.Task[None]] = set()
        feed.subscribe(MAIL_CHANNEL, self._on_change)
        feed.on_resync(self._resync)

    async def start(self) -> None:
        self._poller = asyncio.get_running_loop().create_task(self._poll_while_down())

    async def stop(self) -> None:
        for task in [*self._pushing, *([self._poller] if self._poller is not None else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _poll_while_down(self) -> None:
        while True:
            await asyncio.sleep(self.POLL_WHILE_DOWN)
            if not self.feed.listening:
                self.mark_all()

    def watch(self, session: ImapSession, mailbox_id: int) -> None:
        self._watchers[mailbox_id].add(session)

    def unwatch(self, session: ImapSession, mailbox_id: int) -> None:
        _drop(self._watchers, mailbox_id, session)
        if mailbox_id not in self._watchers:
            self._heard.pop(mailbox_id, None)
            self._recent_upto.pop(mailbox_id, None)
            lock = self._claiming.get(mailbox_id)
            if lock is not None and not lock.locked():
                del self._claiming[mailbox_id]

    async def changes(self, mailbox_id: int, since_modseq: int, max_uid: int, *, share: bool) -> dict[str, Any]:
        """``imap_messages.changes`` for a session that knows ``since_modseq`` and ``max_uid``.

        With ``share``, a query already under way for the same question is awaited instead of asking
        again, if it started after the last change heard of to this mailbox, so it sees everything
        the caller was told of. Only sessions that changed nothing themselves since they heard may
        share (IDLE, news between commands under NOTIFY): their own change's notification may not
        have come yet, and a query that started before it would not show it.
        """
        if not share:
            async with self.pool.acquire() as conn:
                return await imap_messages.changes(conn, mailbox_id, since_modseq, max_uid)
        heard = self._heard.get(mailbox_id, 0)
        key = (mailbox_id, since_modseq, max_uid)
        under_way = self._asking.get(key)
        if under_way is None or under_way[0] != heard:
            task = asyncio.ensure_future(self.changes(mailbox_id, since_modseq, max_uid, share=False))
            under_way = (heard, task)
            self._asking[key] = under_way

            def done(_: object, entry: tuple[int, asyncio.Future[dict[str, Any]]] = under_way) -> None:
                if self._asking.get(key) is entry:
                    del self._asking[key]

            task.add_done_callback(done)
        return await asyncio.shield(under_way[1])  # one waiter cancelled (its client left) stops no other

    async def claim_recent(self, mailbox_id: int, upto: int | None) -> tuple[int, int] | None:
        """``imap_messages.claim_recent`` (one session per mailbox gets each message as \\Recent), asked of
        the database only when no session of this process has taken messages up to ``upto`` already,
        nor is taking them right now: the mailbox's ``recent_uid`` only grows, so the answer would be
        "none" (lo == hi). Sessions woken by one delivery wait for the first one's claim together."""
        known = self._recent_upto.get(mailbox_id)
        if upto is not None and known is not None and upto <= known:
            return known, known
        under_way = self._claims.get(mailbox_id)
        if upto is not None and under_way is not None and under_way[0] >= upto:
            claimed = await asyncio.shield(under_way[1])
            return None if claimed is None else (claimed[1], claimed[1])
        lock = self._claiming.setdefault(mailbox_id, asyncio.Lock())
        async with lock:  # claims for one mailbox one after the other: the first answers for the rest
            known = self._recent_upto.get(mailbox_id)
            if upto is not None and known is not None and upto <= known:
                return known, known
            task = asyncio.ensure_future(self._claim(mailbox_id, upto))
            self._claims[mailbox_id] = (upto if upto is not None else 2**63, task)
            try:
                return await asyncio.shield(task)
            finally:
                if self._claims.get(mailbox_id, (0, None))[1] is task:
                    del self._claims[mailbox_id]

    def claimed_recent(self, mailbox_id: int, uid: int) -> None:
        """A session of this process took messages up to ``uid`` as \\Recent when it stored them (APPEND)."""
        if mailbox_id in self._watchers:
            self._recent_upto[mailbox_id] = max(uid, self._recent_upto.get(mailbox_id, 0))

    async def _claim(self, mailbox_id: int, upto: int | None) -> tuple[int, int] | None:
        async with self.pool.acquire() as conn:
            claimed = await imap_messages.claim_recent(conn, mailbox_id, upto)
        if claimed is not None and mailbox_id in self._watchers:
            self._recent_upto[mailbox_id] = max(claimed[1], self._recent_upto.get(mailbox_id, 0))
        return claimed

    def watch_user(self, session: ImapSession, user_id: int) -> None:
        self._users[user_id].add(session)

    def unwatch_user(self, session: ImapSession, user_id: int) -> None:
        _drop(self._users, user_id, session)

    def mark_all(self) -> None:
        for mailbox_id, sessions in list(self._watchers.items()):
            self._heard[mailbox_id] = self._heard.get(mailbox_id, 0) + 1
            for session in list(sessions):
                session.mark_selected_changed(mailbox_id)

    def _resync(self) -> None:
        self.mark_all()
        for sessions in list(self._users.values()):
            for session in list(sessions):
                session.mail_changed(None)

    def _on_change(self, change: MailChange) -> None:
        watchers = self._watchers.get(change.mailbox)
        if watchers:
            self._heard[change.mailbox] = self._heard.get(change.mailbox, 0) + 1
            idle: list[ImapSession] = []
            known = change.modseq if change.event in _MESSAGE_EVENTS and change.modseq else None
            for session in watchers:
                sel = session.selected
                if known is not None and sel is not None and sel.known_modseq >= known:
                    continue  # the session's own change, taken into its view already (ImapSession.own_change)
                if session.pushable():
                    idle.append(session)
                else:
                    session.mark_selected_changed(change.mailbox)
            if idle:
                task = asyncio.get_running_loop().create_task(self._push(change.mailbox, idle))
                self._pushing.add(task)
                task.add_done_callback(self._pushed)
        for session in self._users.get(change.user, ()):
            session.mail_changed(change)

    async def _push(self, mailbox_id: int, sessions: list[ImapSession]) -> None:
        """Report a change to sessions in plain IDLE without waking them: one query per state they knew
        (usually one for all), one \\Recent claim, then each session's lines written from here. A
        session that left IDLE or changed meanwhile, or any failure, falls back to waking it."""
        groups: dict[tuple[int, int], list[ImapSession]] = collections.defaultdict(list)
        for session in sessions:
            sel = session.selected
            if sel is not None:
                groups[sel.known_modseq, sel.max_uid].append(session)
        for (since, max_uid), group in groups.items():
            try:
                delta = await self.changes(mailbox_id, since, max_uid, share=True)
                claimed = None
                if delta.get("new") and any(s.selected is not None and s.selected.takes_recent for s in group):
                    claimed = await self.claim_recent(mailbox_id, delta["new"][-1])
            except Exception:  # noqa: BLE001 - the sessions ask for themselves, and report a failure as always
                for session in group:
                    session.mark_selected_changed(mailbox_id)
                continue
            for session in group:
                sel = session.selected
                if (
                    delta["gone"]
                    or sel is None
                    or sel.mailbox_id != mailbox_id
                    or (sel.known_modseq, sel.max_uid) != (since, max_uid)
                    or not session.pushable()
                ):
                    session.mark_selected_changed(mailbox_id)
                    continue
                mine = None
                if sel.takes_recent and delta["new"] and claimed is not None:
                    mine, claimed = claimed, (claimed[1], claimed[1])  # the first session takes them all
                try:
                    session.push(delta, mine)
                except Exception as exc:  # noqa: BLE001 - one session's failure must not silence the others
                    log.error("imap-push-error client=%s error=%s: %s", session.client, type(exc).__name__, exc)
                    session.mark_selected_changed(mailbox_id)

    def _pushed(self, task: asyncio.Task[None]) -> None:
        self._pushing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("imap-push-failed error=%r", task.exception())


# Changes to a mailbox's messages, each with the modseq it took: a session that knows that modseq has it.
_MESSAGE_EVENTS = frozenset({"new", "flags", "expunge"})


def _drop(table: dict[int, set[ImapSession]], key: int, session: ImapSession) -> None:
    """Take ``session`` out of ``table[key]``, and the entry out of the table once it is empty."""
    sessions = table.get(key)
    if sessions is not None:
        sessions.discard(session)
        if not sessions:
            del table[key]


class ImapServer(StreamServer):
    log = logging.getLogger("relate.imap")
    protocol = "imap"
    refusal = b"* BYE Too many connections, try again later\r\n"

    def __init__(
        self, cfg: Config, pool: asyncpg.Pool, authenticator: Authenticator, feed: ChangeFeed | None = None
    ) -> None:
        super().__init__(
            TLSRegistry(cfg.tls.cert, cfg.tls.key),
            max_connections=cfg.imap.max_connections,
            max_per_client=cfg.imap.max_connections_per_client,
            line_limit=cfg.imap.max_line_length,
        )
        self.cfg = cfg
        self.pool = pool
        self.authenticator = authenticator
        # The process's change feed when given (the runtime shares one), else one of its own.
        self._own_feed = feed is None
        self.feed = feed if feed is not None else ChangeFeed(cfg.database)
        self.hub = ChangeHub(self.feed, pool)
        # Bytes of APPENDed messages held in memory while they are stored (about twice each message).
        self.memory = MemoryBudget(cfg.imap.memory_budget)
        self.views = MailboxViews()  # what SELECT read, for the next SELECT of an unchanged mailbox
        self.commands = Dispatch(commands.HANDLERS, commands.ALLOWED)
        self.listeners = {"imap": (cfg.imap.imap, False), "imaps": (cfg.imap.imaps, True)}
        self._per_user: collections.Counter[int] = collections.Counter()

    def has_tls(self, role: str) -> bool:
        return self.tls_for(role) is not None

    def admit_user(self, session: ImapSession, user_id: int) -> str | None:
        if self._per_user[user_id] >= self.cfg.imap.max_connections_per_user:
            return "Too many connections for this user"
        self._per_user[user_id] += 1
        return None

    def make_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, role: str) -> ImapSession:
        return ImapSession(self, reader, writer, tls=role == "imaps")

    async def session_ended(self, session: Session) -> None:
        assert isinstance(session, ImapSession)
        if session.principal is not None:
            self._per_user[session.principal.user_id] -= 1
        if session.selected is not None:
            self.hub.unwatch(session, session.selected.mailbox_id)
        if session.principal is not None:
            self.hub.unwatch_user(session, session.principal.user_id)
        session.log_summary()

    def problem(self) -> str | None:
        """What is degraded (for the heartbeat and ``relatectl status``), or None."""
        return self.feed.problem()

    async def start(self, sockets: dict[str, list[socket.socket]] | None = None, *, hold: bool = False) -> None:
        await self.hub.start()
        if self._own_feed:
            await self.feed.start()
        await self.start_listeners(sockets, hold=hold)

    async def stop(self, grace: float = 5.0) -> None:
        await self.stop_listeners(grace)
        await self.hub.stop()
        if self._own_feed:
            await self.feed.stop()
