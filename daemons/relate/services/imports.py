"""Moving in: a user's mail from a Maildir tree, mbox files or a live IMAP server (relatectl import).

Policy:

- Every message goes in through :func:`relate.store.messages.ingest`, the
  path SMTP mail takes: the same parsing, envelope, body structure, sort and
  thread keys, search text (the body indexed after commit by the indexer),
  quota check, and the ``NOTIFY relate_mail`` that IMAP IDLE and the API's
  hub hear at commit. Web push is not sent (it is for new mail, and this is
  old mail: ten thousand phones buzzing for a move would help nobody).
- Nothing is imported twice: a message whose exact bytes are in the target
  folder already (the blobs are keyed by SHA-256) is counted as "already
  here" and not stored again, so running the same import again stores
  nothing. The IMAP import also remembers, per source folder, the
  UIDVALIDITY and the highest UID stored (store/imports.py), committed with
  the messages, so a second run does not even download what it has, and an
  interrupted one goes on from its last commit. When the source's
  UIDVALIDITY changed, every message is downloaded again and compared by
  content.
- Folders: a source folder goes to ours of the same special use (RFC 6154:
  the old server's "Sent Items" into Sent), else of the same name, else a
  new one, subscribed.
- Memory is bounded: the source is read in a worker thread (files, or
  imaplib's blocking socket) that hands messages over through a queue of
  ``_QUEUED`` messages; they are stored in transactions of at most ``_BATCH``
  messages or ``_BATCH_OCTETS`` octets. A message past ``max_size`` is
  skipped and counted.
- Line ends: Maildir and mbox files hold messages with LF line ends; they
  are stored with CRLF, as the message is on the wire (RFC 5322 §2.3) and
  as Dovecot serves the same file over IMAP, so BODY[] gives the octets the
  old server gave, and the same message imported over IMAP is the same blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import lzma
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from relate.config import Config
from relate.errors import Invalid, NotFound, OverQuota
from relate.importing import DEFAULT_MAX_SIZE, KEYWORD, maildir, mbox
from relate.importing.imap import ImapSource, RemoteFolder
from relate.services import accounts as users
from relate.store import accounts, imports, mailboxes, messages

_QUEUED = 64
_BATCH = 200
_BATCH_OCTETS = 8 * 1024 * 1024
_BARE_LF = re.compile(rb"(?<!\r)\n")
_SYSTEM_FLAGS = {f.lower(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")}


@dataclass(frozen=True)
class FolderStart:
    """What follows is one source folder's messages."""

    source: str  # the folder as the source names it (a path, a file, a remote name)
    name: str  # ours
    special_use: str | None
    messages: int | None  # in the source folder (None: not known before it is read, as in an mbox)
    already: int = 0  # of those, the ones an earlier run imported (IMAP: at or below the UID it recorded)
    uidvalidity: int | None = None  # IMAP: recorded with the last UID of each batch


@dataclass(frozen=True)
class Item:
    raw: bytes
    flags: tuple[str, ...]
    internal_date: datetime | None
    uid: int | None = None  # IMAP: the source's UID


@dataclass(frozen=True)
class Skipped:
    """A message not imported: too big, or unreadable (``reason``)."""

    reason: str


Event = FolderStart | Item | Skipped


@dataclass
class FolderResult:
    source: str
    name: str
    messages: int
    imported: int = 0
    already: int = 0
    skipped: int = 0
    octets: int = 0


@dataclass
class Result:
    user: str
    folders: list[FolderResult] = field(default_factory=list)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def total(self, key: str) -> int:
        return sum(int(getattr(f, key)) for f in self.folders)

    @property
    def rate(self) -> float:
        return self.total("imported") / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        keys = ("messages", "imported", "already", "skipped", "octets")
        return {
            "user": self.user,
            "folders": [asdict(f) for f in self.folders],
            **{key: self.total(key) for key in keys},
            "seconds": round(self.seconds, 3),
            "messages_per_second": round(self.rate, 1),
            "problems": self.problems,
        }


class Progress(Protocol):
    def folder(self, name: str, total: int) -> None: ...

    def advance(self, messages: int, octets: int) -> None: ...


class _Quiet:
    def folder(self, name: str, total: int) -> None:
        pass

    def advance(self, messages: int, octets: int) -> None:
        pass


def clean_flags(flags: Iterable[str]) -> list[str]:
    """System flags in their usual spelling, and keywords that are IMAP atoms; anything else dropped."""
    kept: list[str] = []
    for flag in flags:
        if flag.startswith("\\"):
            system = _SYSTEM_FLAGS.get(flag.lower())
            if system:
                kept.append(system)
        elif KEYWORD.match(flag):
            kept.append(flag)
    return list(dict.fromkeys(kept))


def crlf(raw: bytes) -> bytes:
    """``raw`` with CRLF line ends: files keep LF, the wire (and Dovecot's IMAP, and an IMAP import) has CRLF."""
    return _BARE_LF.sub(b"\r\n", raw) if b"\n" in raw else raw


# -- the sources, as events (each runs in the worker thread) --------------------------------------------


def maildir_events(root: Path, max_size: int = DEFAULT_MAX_SIZE) -> Iterator[Event]:
    """A Maildir++ tree (importing/maildir.py): its folders and messages."""
    found = maildir.folders(root)
    if not found:
        raise Invalid(f"{root} is not a Maildir: no cur/ or new/ in it or in any .Folder beside them")
    for folder in found:
        listed = list(maildir.messages(folder.path))
        yield FolderStart(str(folder.path), folder.name, None, len(listed))
        for message in listed:
            try:
                raw = maildir.read(message.path, max_size)
            except maildir.TooBig as exc:
                yield Skipped(f"{message.path}: {exc.size} octets or more, more than --max-size")
                continue
            except FileNotFoundError:
                continue  # moved or expunged by a client of the old server meanwhile
            except (OSError, EOFError, lzma.LZMAError) as exc:
                yield Skipped(f"{message.path}: {getattr(exc, 'strerror', None) or exc}")
                continue
            yield Item(crlf(raw), message.flags, message.internal_date)


def mbox_events(
    files: list[Path], mailbox: str | None, *, rd: bool = True, max_size: int = DEFAULT_MAX_SIZE
) -> Iterator[Event]:
    """mbox files (importing/mbox.py): each into ``mailbox``, or a folder named after the file."""
    for path in files:
        name = mailbox or ("INBOX" if path.stem.lower() in ("inbox", "mbox") else path.stem)
        with path.open("rb") as stream:
            head = stream.read(5)
            if head and head != b"From ":
                raise Invalid(f"{path} is not an mbox file: it does not start with a 'From ' line")
            stream.seek(0)
            yield FolderStart(str(path), name, None, None)
            for message in mbox.read(stream, rd=rd, max_size=max_size):
                if isinstance(message, mbox.Oversized):
                    yield Skipped(f"{path} at octet {message.offset}: {message.size} octets, more than --max-size")
                else:
                    yield Item(crlf(message.raw), message.flags, message.internal_date)


def imap_events(
    source: ImapSource, known: dict[str, imports.Progress], max_size: int = DEFAULT_MAX_SIZE
) -> Iterator[Event]:
    """Every folder of the logged-in ``source`` (importing/imap.py), from where earlier runs stopped."""
    folders: list[RemoteFolder] = source.folders()
    for folder in folders:
        uidvalidity, exists = source.examine(folder)
        before = known.get(folder.name)
        after = before.last_uid if before is not None and before.uidvalidity == uidvalidity else 0
        wanted = source.sizes(after) if exists else []  # (some servers answer BAD to 1:* in an empty folder)
        fetched = [(uid, size) for uid, size in wanted if size <= max_size]
        yield FolderStart(folder.name, folder.name, folder.special_use, exists, exists - len(wanted), uidvalidity)
        for uid, size in wanted:
            if size > max_size:
                yield Skipped(f"{folder.name} UID {uid}: {size} octets, more than --max-size")
        for message in source.fetch(fetched):
            yield Item(message.raw, message.flags, message.internal_date, message.uid)


# -- the worker thread and the queue --------------------------------------------------------------------


class _Pump:
    """Runs a blocking event source in a thread; the event loop takes its events from a bounded queue."""

    _END = object()

    def __init__(self, events: Callable[[], Iterator[Event]]) -> None:
        self._events = events
        self._queue: asyncio.Queue[object] = asyncio.Queue(_QUEUED)
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relate-import-source", daemon=True)

    def _put(self, item: object) -> None:
        future = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                future.result(timeout=0.5)
                return
        future.cancel()

    def _run(self) -> None:
        try:
            for event in self._events():
                if self._stop.is_set():
                    return
                self._put(event)
            self._put(self._END)
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop, which raises it
            self._put(exc)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    async def __aiter__(self) -> Any:
        while True:
            item = await self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


# -- storing --------------------------------------------------------------------------------------------


@dataclass
class _Target:
    mailbox_id: int
    result: FolderResult
    start: FolderStart


async def _mailbox(conn: asyncpg.Connection, user_id: int, start: FolderStart, cfg: Config) -> tuple[int, str]:
    """Our folder for ``start`` (see the policy): (id, name)."""
    if start.special_use:
        found = await accounts.special_mailbox(conn, user_id, start.special_use)
        if found is not None:
            box = await mailboxes.by_id(conn, found)
            assert box is not None
            return found, box["name"]
    box = await mailboxes.get(conn, user_id, start.name)
    if box is not None:
        return box["id"], box["name"]
    async with conn.transaction():  # (the user has no folder of its special use, if it has one: it gets it)
        made = await mailboxes.create(conn, user_id, start.name, start.special_use, limit=cfg.quota.mailboxes)
        await mailboxes.subscribe(conn, user_id, [*mailboxes.ancestors(start.name), start.name])
    return made["id"], made["name"]


async def _store(
    conn: asyncpg.Connection,
    user: dict[str, Any],
    target: _Target,
    batch: list[Item],
    source: str | None,
    cfg: Config,
) -> int:
    """Store one batch in one transaction (with the source's progress); returns the octets stored."""
    prepared = [await messages.prepare(item.raw) for item in batch]
    enforce = messages.Enforce(cfg.quota)
    octets = 0
    async with conn.transaction():
        here = await imports.present(conn, target.mailbox_id, [p.digest for p in prepared])
        for item, prep in zip(batch, prepared, strict=True):
            if prep.digest in here:
                target.result.already += 1
                continue
            here.add(prep.digest)
            stored = await messages.ingest(
                conn,
                item.raw,
                [target.mailbox_id],
                flags=clean_flags(item.flags),
                internal_date=item.internal_date,
                prepared=prep,
                enforce=enforce,
            )
            if not stored:
                raise OverQuota(
                    f"{user['address']} is over quota (after {target.result.imported} messages in "
                    f"{target.result.name}): "
                    f"raise it (relatectl user quota {user['address']} ...) and run the same import again"
                )
            octets += prep.size
        uids = [item.uid for item in batch if item.uid is not None]
        if source is not None and uids and target.start.uidvalidity is not None:
            await imports.record(conn, user["id"], source, target.start.source, target.start.uidvalidity, max(uids))
    return octets


async def find_user(pool: asyncpg.Pool, address: str) -> dict[str, Any]:
    """The user mail is imported for; an unknown one is an error that says how to add it."""
    try:
        return await users.get_user(pool, address)
    except NotFound:
        raise NotFound(f"no such user: {address} (add it with `relatectl user add {address}`)") from None


async def run(
    pool: asyncpg.Pool,
    cfg: Config,
    address: str,
    events: Callable[[dict[str, imports.Progress]], Iterator[Event]],
    *,
    source: str | None = None,
    progress: Progress | None = None,
    batch_size: int = _BATCH,
) -> Result:
    """Import what ``events`` yields into ``address``'s folders (see the module's policy).

    ``events`` is called in the worker thread with the progress recorded for
    ``source`` (a name for the IMAP account: its folders' UIDVALIDITY and
    last UID), so it can skip what earlier runs stored. Each transaction
    stores at most ``batch_size`` messages.
    """
    shown = progress or _Quiet()
    user = await find_user(pool, address)
    known: dict[str, imports.Progress] = {}
    if source is not None:
        for row in await pool.fetch(
            "SELECT folder, uidvalidity, last_uid FROM import_progress WHERE user_id = $1 AND source = $2",
            user["id"],
            source,
        ):
            known[row["folder"]] = imports.Progress(row["uidvalidity"], row["last_uid"])
    result = Result(user["address"])
    started = time.monotonic()
    pump = _Pump(lambda: events(known))
    pump.start()
    try:
        async with pool.acquire() as conn:
            target: _Target | None = None
            batch: list[Item] = []
            octets = 0

            async def flush() -> None:
                nonlocal batch, octets
                if target is not None and batch:
                    before = target.result.already
                    stored_octets = await _store(conn, user, target, batch, source, cfg)
                    target.result.imported += len(batch) - (target.result.already - before)
                    target.result.octets += stored_octets
                    shown.advance(len(batch), octets)
                batch, octets = [], 0

            async for event in pump:
                if isinstance(event, FolderStart):
                    await flush()
                    box_id, name = await _mailbox(conn, user["id"], event, cfg)
                    target = _Target(box_id, FolderResult(event.source, name, event.messages or 0), event)
                    target.result.already = event.already
                    result.folders.append(target.result)
                    shown.folder(name, -1 if event.messages is None else event.messages - event.already)
                elif isinstance(event, Skipped):
                    if target is not None:
                        target.result.skipped += 1
                        target.result.messages += target.start.messages is None
                    result.problems.append(event.reason)
                    shown.advance(1, 0)
                else:
                    batch.append(event)
                    octets += len(event.raw)
                    if target is not None and target.start.messages is None:
                        target.result.messages += 1  # counted as read
                    if len(batch) >= batch_size or octets >= _BATCH_OCTETS:
                        await flush()
            await flush()
    finally:
        pump.stop()
    result.seconds = time.monotonic() - started
    return result


def imap_source_name(host: str, port: int, login: str) -> str:
    """How the progress of one IMAP account is keyed: ``imap://login@host:port``."""
    return f"imap://{login}@{host.lower()}:{port}"
