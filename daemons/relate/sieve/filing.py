"""Sieve at delivery: the recipient's active script decides where the copy is filed, in the delivery's
transaction.

Policy:

- Every local delivery through :class:`relate.delivery.Delivery` (MX,
  submission to a local user, the REST send path) runs the active script of
  each local recipient that has one, before that recipient's copy is filed,
  and files it in the same transaction as the rest of the delivery:
  ``keep`` into INBOX, ``fileinto`` into the named mailbox (created first
  with ``:create``, RFC 5490), with the flags imap4flags gave (RFC 5232),
  ``discard`` nowhere; editheader's edits (RFC 5293) are in the copy filed.
- ``redirect``, ``reject``, ``ereject`` and ``vacation`` are recorded in
  ``sieve_actions`` (with the message as filtered, for redirect; the facts
  of its header vacation's rules read, for vacation) in that same
  transaction, which wakes the delivery daemon (``relate_queue``). It sends
  vacation replies (relate/sieve/vacation.py), reject/ereject DSNs
  (relate/sieve/refuse.py) and redirects with SRS (relate/sieve/redirect.py,
  which also holds back a looping redirect or one past the daily limit: the
  message is kept instead).
- A script that fails, at compile time (stored before a limit changed, say)
  or at run time (a limit, a conflict, ``fileinto`` into a mailbox that does
  not exist without ``:create``), has the message filed into INBOX as the
  implicit keep (RFC 5228 §2.10.6) with an ``X-Sieve-Error:`` field on top
  saying why (its line, its reason), which any mail client shows, and one
  log line ``sieve-error user=... script=... reason=...``. Nothing else the
  script asked for is done.
- The ids the duplicate test saw (RFC 7352) are remembered only when the
  run succeeds, in the delivery's transaction: a rolled-back delivery leaves
  no trace, and the retry sees the message as new again.
- Quota: a copy filed elsewhere than INBOX counts against the same user's
  limits, checked in the statement that stores it when the recipient's
  INBOX copy would have been; a copy refused for want of room is handled as
  the INBOX copy would have been (the delivery's own rules).
- Compiled scripts are cached per process by (script id, last change), so a
  delivery parses a script only the first time it meets it after a change
  (a long one in a worker thread, off the event loop). A run itself stays on
  the loop: ``sieve.max_steps`` bounds it to a few milliseconds, and a body
  test over a large body decodes it in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from relate.config import QuotaConfig, SieveConfig
from relate.errors import Conflict, Invalid, TooMany
from relate.sieve import compile_script, interpreter, limits, redirect, refuse, vacation
from relate.sieve.errors import SieveError
from relate.sieve.grammar import Script
from relate.sieve.interpreter import Keep, Redirect, Reject, Result, Vacation
from relate.sieve.message import Envelope
from relate.store import changes, mailboxes, messages
from relate.store import sieve as store
from relate.store.messages import StoredMessage
from relate.store.sieve import ActiveScript

log = logging.getLogger("relate.sieve")

ERROR_FIELD = b"X-Sieve-Error"
_CACHE_SIZE = 512
_OFF_LOOP_SCRIPT = 2048  # characters: a longer script is compiled off the event loop
_cache: OrderedDict[tuple[int, datetime], Script | SieveError] = OrderedDict()
_SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")}
_KEYWORD = re.compile(r"[!#$&'+\-.0-9:;<=>?@A-Z\[^_`a-z|~]{1,100}\Z")  # IMAP atom characters, no "\"
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f]|^/|/$|//")


# Stores the copy as the delivery has it into one mailbox with flags (the delivery's own copy, its
# blob written once however many mailboxes get it).
StoreCopy = Callable[[int, tuple[str, ...], messages.Enforce | None], Awaitable[list[StoredMessage]]]


@dataclass(frozen=True)
class Filed:
    stored: list[StoredMessage]
    refused: bool  # a copy found no room (quota): the caller treats the recipient as its INBOX copy's rules say
    result: Result


async def active(conn: asyncpg.Connection, user_ids: Sequence[int]) -> dict[int, ActiveScript]:
    """The active scripts of these users, by user id (one query)."""
    return await store.active_scripts(conn, list(dict.fromkeys(user_ids)))


async def compiled(script: ActiveScript, cfg: SieveConfig) -> Script | SieveError:
    """The script compiled (cached); a long one is compiled in a worker thread (about 2 ms of CPU a KiB)."""
    key = (script.script_id, script.updated_at)
    found = _cache.get(key)
    if found is None:
        try:
            if len(script.text) > _OFF_LOOP_SCRIPT:
                found = await asyncio.to_thread(compile_script, script.text, cfg)
            else:
                found = compile_script(script.text, cfg)
        except SieveError as exc:
            found = exc
        _cache[key] = found
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    else:
        _cache.move_to_end(key)
    return found


async def deliver(
    conn: asyncpg.Connection,
    cfg: SieveConfig,
    script: ActiveScript,
    raw: bytes,
    digest: bytes,
    store_copy: StoreCopy,
    *,
    inbox_id: int,
    rcpt: str,
    mail_from: str,
    quota: QuotaConfig | None,
    mailbox_limit: int = 0,
) -> Filed:
    """Run ``script`` over the copy (``raw``, whose sha256 is ``digest``) for ``rcpt`` and file it as the
    script says (module docstring): the copy unchanged through ``store_copy``, an edited one anew."""
    user_id = script.user_id
    program = await compiled(script, cfg)
    if isinstance(program, SieveError):
        result = Result([Keep(implicit=True)], error=f"the script does not compile: {program}")
    else:

        async def seen(handle: str, value: str) -> bool:
            return await store.duplicate_seen(conn, user_id, handle, value)

        async def exists(name: str) -> bool:
            return await mailboxes.get(conn, user_id, name) is not None

        result = await interpreter.run(
            program, raw, Envelope(mail_from, rcpt), limits=limits(cfg), duplicate=seen, mailbox_exists=exists
        )
    if result.error is None:
        own = {rcpt.lower(), str(await conn.fetchval("SELECT address FROM users WHERE id = $1", user_id)).lower()}
        result = await redirect.held(conn, result, user_id, own, raw, cfg.max_redirects_per_day)
    targets: list[tuple[int, tuple[str, ...]]] = []
    if result.error is None:
        try:
            for name, flags, create in result.mailboxes:
                targets.append((await _mailbox(conn, user_id, inbox_id, name, create, mailbox_limit), _flags(flags)))
        except _NoMailbox as exc:
            result = Result([Keep(implicit=True)], error=str(exc), steps=result.steps)
    if result.error is not None:
        targets = [(inbox_id, ())]
        log.warning("sieve-error user=%d script=%r rcpt=%s reason=%s", user_id, script.name, rcpt, result.error[:300])
        body = _error_field(result.error) + raw
    else:
        body = result.message if result.message is not None else raw
    enforce = messages.Enforce(quota) if quota is not None else None
    stored: list[StoredMessage] = []
    if body is raw:
        for box, flags in _merged(targets):
            stored += await store_copy(box, flags, enforce)
    else:
        prepared = await messages.prepare(body)
        digest = prepared.digest
        for box, flags in _merged(targets):
            stored += await messages.ingest(
                conn, body, [box], flags=flags, prepared=prepared, enforce=enforce, delivered=True
            )
    if result.error is None:
        await store.remember_duplicates(conn, user_id, result.track)
        await _record(conn, result, user_id, rcpt, mail_from, body, digest if stored else None)
    return Filed(stored, enforce is not None and bool(enforce.refused), result)


async def file_one(
    conn: asyncpg.Connection,
    cfg: SieveConfig,
    raw: bytes,
    *,
    user_id: int,
    inbox_id: int,
    rcpt: str,
    mail_from: str,
    quota: QuotaConfig | None,
    mailbox_limit: int = 0,
) -> list[StoredMessage]:
    """One local copy (a delivery: the change feed says so) through its owner's active script, if there is
    one (else into INBOX, as messages.ingest would); nothing is stored when a copy finds no room (``quota``)."""
    found = (await store.active_scripts(conn, [user_id])).get(user_id) if cfg.enabled else None
    if found is None:
        return await messages.ingest(
            conn, raw, [inbox_id], enforce=messages.Enforce(quota) if quota else None, delivered=True
        )

    async def store_copy(box: int, flags: tuple[str, ...], enforce: messages.Enforce | None) -> list[StoredMessage]:
        return await messages.ingest(conn, raw, [box], flags=flags, enforce=enforce, delivered=True)

    filed = await deliver(
        conn,
        cfg,
        found,
        raw,
        hashlib.sha256(raw).digest(),
        store_copy,
        inbox_id=inbox_id,
        rcpt=rcpt,
        mail_from=mail_from,
        quota=quota,
        mailbox_limit=mailbox_limit,
    )
    return [] if filed.refused else filed.stored


class _NoMailbox(Exception):
    pass


async def _mailbox(conn: asyncpg.Connection, user_id: int, inbox_id: int, name: str, create: bool, limit: int) -> int:
    if mailboxes.is_inbox(name):
        return inbox_id
    if _BAD_NAME.search(name):
        raise _NoMailbox(f'fileinto: "{name[:100]}" is not a mailbox name')
    found = await mailboxes.get(conn, user_id, name)
    if found is None and create:
        try:
            found = await mailboxes.create(conn, user_id, name, limit=limit)
        except Conflict:
            found = await mailboxes.get(conn, user_id, name)
        except (TooMany, Invalid) as exc:
            raise _NoMailbox(f'fileinto :create "{name[:100]}": {exc}') from exc
    if found is None:
        raise _NoMailbox(f'fileinto: there is no mailbox "{name[:100]}" (":create" makes it)')
    box: int = found["id"]
    return box


def _merged(targets: list[tuple[int, tuple[str, ...]]]) -> list[tuple[int, tuple[str, ...]]]:
    """One copy per mailbox (a name and its other spelling may name one mailbox), flags together, in
    mailbox id order."""
    out: dict[int, tuple[str, ...]] = {}
    for box, flags in targets:
        out[box] = tuple(dict.fromkeys([*out.get(box, ()), *flags]))
    return sorted(out.items())  # mailbox row locks in id order, as everyone takes them


def _flags(flags: tuple[str, ...]) -> tuple[str, ...]:
    """IMAP flags from imap4flags' list: system flags spelled as IMAP does, valid keywords; \\Recent and
    anything else that is no IMAP flag left out."""
    out: list[str] = []
    for flag in flags:
        system = _SYSTEM_FLAGS.get(flag.lower())
        if system is not None:
            out.append(system)
        elif _KEYWORD.match(flag):
            out.append(flag)
    return tuple(dict.fromkeys(out))


def _error_field(reason: str) -> bytes:
    text = " ".join(reason.split())[:500]
    return ERROR_FIELD + b": " + text.encode("utf-8", "replace") + b"\r\n"


async def _record(
    conn: asyncpg.Connection,
    result: Result,
    user_id: int,
    rcpt: str,
    mail_from: str,
    body: bytes,
    blob: bytes | None,
) -> None:
    """The sending actions, for the sending side; the message's bytes are kept for a redirect."""
    if any(isinstance(a, Vacation | Reject | Redirect) for a in result.actions):
        await conn.execute("SELECT pg_notify($1, 'sieve')", changes.QUEUE)  # the delivery daemon replies
    for action in result.actions:
        if isinstance(action, Redirect):
            kind, detail = "redirect", {"address": action.address, "copy": action.copy}
            if blob is None:
                blob = await messages.put_blob(conn, body)
        elif isinstance(action, Reject):
            kind = "ereject" if action.extended else "reject"
            detail = {"reason": action.reason, "header": refuse.header_of(body)}  # for the DSN (relate/sieve/refuse.py)
        elif isinstance(action, Vacation):
            kind = "vacation"
            detail = {
                "reason": action.reason,
                "seconds": action.seconds,
                "subject": action.subject,
                "from": action.from_,
                "addresses": list(action.addresses),
                "mime": action.mime,
                "handle": action.handle,
                "original": vacation.facts(body),  # what the sending side's rules read (relate/sieve/vacation.py)
            }
        else:
            continue
        await store.record_action(
            conn,
            user_id,
            kind,
            detail,
            mail_from=mail_from,
            rcpt_to=rcpt,
            blob_hash=blob if kind == "redirect" else None,
            message_id=None,
        )
