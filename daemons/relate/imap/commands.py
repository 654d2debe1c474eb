"""IMAP command handlers, one per verb, and the verbs each state allows (RFC 9051 §6)."""

from __future__ import annotations

import asyncio
import base64
import bisect
import logging
from dataclasses import dataclass
from typing import Any

from relate.auth import AuthRefused
from relate.errors import Conflict, NotFound, OverQuota, TooMany
from relate.imap import append as appending
from relate.imap import compress as compressing
from relate.imap import condstore, contexts, limits, listmatch
from relate.imap import fetch as fetching
from relate.imap import notify as notifying
from relate.imap import preview as previewing
from relate.imap import search as searching
from relate.imap import sort as ordering
from relate.imap.errors import Bad, Bye, No
from relate.imap.mutf7 import UndecodableName, encode_mailbox
from relate.imap.parser import (
    Append,
    Authenticate,
    Command,
    Compress,
    CopyMove,
    CreateSpecial,
    Enable,
    Fetch,
    FetchAtt,
    Id,
    ListCommand,
    Login,
    MailboxCommand,
    QuotaRoot,
    Rename,
    Search,
    Select,
    SeqSet,
    SetQuota,
    Status,
    Store,
    UidExpunge,
)
from relate.imap.session import (
    AUTHENTICATED,
    DB_UNAVAILABLE,
    LOGOUT,
    NEWS_RETRY,
    NOT_AUTHENTICATED,
    SELECTED,
    Handler,
    ImapSession,
    Selected,
    describe,
    transport_reason,
)
from relate.imap.views import View
from relate.mail.imapwire import astring, flag_list
from relate.runtime.streams import pending_input
from relate.store import imap_messages, mailboxes, quota

log = logging.getLogger("relate.imap")

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_SPECIAL_USES = frozenset({"\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive", "\\All", "\\Flagged"})


def _flags(given: tuple[str, ...]) -> list[str]:
    """Flags as stored: system flags in their canonical case, \\Recent dropped (RFC 9051 §2.3.2)."""
    out = []
    for flag in given:
        if flag.startswith("\\"):
            canonical = next((s for s in SYSTEM_FLAGS if s.lower() == flag.lower()), None)
            if canonical is None:
                if flag.lower() == "\\recent":
                    continue
                raise Bad(f"Unknown system flag {flag[:40]}")
            flag = canonical
        if flag not in out:
            out.append(flag)
    return out


def _mailbox_name(session: ImapSession, name: str) -> str:
    return encode_mailbox(name, utf8=session.utf8)


def _has_control(name: str) -> bool:
    return any(ord(c) < 0x20 or c == "\x7f" for c in name)


def _undecodable(name: str) -> None:
    """NO for a name that is not valid modified UTF-7 (or UTF-8): it names no mailbox and never will."""
    if isinstance(name, UndecodableName):
        raise No(name.problem[:1].upper() + name.problem[1:], "CANNOT")


def _check_name(name: str) -> str:
    """A new mailbox name: no empty levels, no control characters (RFC 9051 §5.1), bounded size."""
    _undecodable(name)
    name = name.rstrip("/")
    if not name or "//" in name or name.startswith("/") or _has_control(name):
        raise No("Invalid mailbox name", "CANNOT")
    if len(name.encode()) > limits.MAX_MAILBOX_NAME:
        raise No(f"Mailbox name too long (at most {limits.MAX_MAILBOX_NAME} octets)", "CANNOT")
    if name.count("/") >= limits.MAX_MAILBOX_DEPTH:
        raise No(f"Mailbox name too deep (at most {limits.MAX_MAILBOX_DEPTH} levels)", "CANNOT")
    return "INBOX" + name[5:] if name.upper().startswith("INBOX/") else name


def _existing_name(name: str) -> str:
    """A name to look up. One that :func:`_check_name` would refuse can name no mailbox: it is answered
    NO [NONEXISTENT] here and never reaches the database (PostgreSQL text cannot even hold a NUL)."""
    _undecodable(name)
    if _has_control(name) or len(name.encode()) > limits.MAX_MAILBOX_NAME:
        raise No("No such mailbox", "NONEXISTENT")
    return name


def _over_quota(session: ImapSession, cmd: Command) -> No:
    """RFC 9208 §4.3.1: APPEND, COPY that would take the user past a quota limit; nothing was stored."""
    log.info("imap-overquota client=%s user=%s command=%s", session.client, describe_user(session), cmd.name)
    return No("Quota exceeded: delete or expunge mail first", "OVERQUOTA")


def describe_user(session: ImapSession) -> str:
    return session.principal.address if session.principal is not None else "-"


async def _mailbox(session: ImapSession, name: str) -> dict[str, Any]:
    assert session.principal is not None
    box = await mailboxes.get(session.server.pool, session.principal.user_id, _existing_name(name))
    if box is None:
        raise No(f"No such mailbox {name[:200]}", "NONEXISTENT")
    return box


# -- any state: RFC 9051 §6.1 --------------------------------------------------------


# RFC 9051 §6.1.1 (CAPABILITY)
async def capability(session: ImapSession, cmd: Command) -> None:
    session.untagged("CAPABILITY " + " ".join(session.capabilities()))
    session.tagged(cmd.tag, "OK", "CAPABILITY completed")


# RFC 9051 §6.1.2 (NOOP), §6.4.1 (CHECK is NOOP in IMAP4rev1 terms)
async def noop(session: ImapSession, cmd: Command) -> None:
    if session.reports_selected():  # not under NOTIFY without SELECTED (RFC 5465 §3.1)
        await session.sync()
    session.tagged(cmd.tag, "OK", f"{cmd.name} completed", condstore.highest_code(session))


# RFC 9051 §6.1.3 (LOGOUT)
async def logout(session: ImapSession, cmd: Command) -> None:
    session.untagged("BYE Relate Mail logging out")
    session.tagged(cmd.tag, "OK", "LOGOUT completed")
    session.state = LOGOUT


# RFC 2971 (ID)
async def id_(session: ImapSession, cmd: Id) -> None:
    session.untagged(b'ID ("name" "Relate Mail" "vendor" "Relate Mail")')
    session.tagged(cmd.tag, "OK", "ID completed")


# -- not authenticated: RFC 9051 §6.2 --------------------------------------------------


# RFC 9051 §6.2.1 (STARTTLS)
async def starttls(session: ImapSession, cmd: Command) -> None:
    if session.tls:
        raise Bad("TLS is already active")
    tls = session.server.tls_for("imap")
    if tls is None:
        raise No("STARTTLS is not available")
    if pending_input(session.reader):
        # Commands pipelined after STARTTLS were sent in clear text: never run them under TLS.
        raise Bye("Data after STARTTLS before the TLS handshake")
    session.tagged(cmd.tag, "OK", "Begin TLS negotiation now")
    await session.flush()
    try:
        await session.writer.start_tls(tls.context)
    except (OSError, asyncio.IncompleteReadError) as exc:
        # One line says it: the session's own (end=tls-failed:REASON), no traceback.
        session.end = f"tls-failed:{transport_reason(exc)}"
        raise Bye("TLS negotiation failed") from None
    session.tls = True


# RFC 4978 §3 (COMPRESS); imap/compress.py says how
async def compress(session: ImapSession, cmd: Compress) -> None:
    if cmd.mechanism != "DEFLATE":
        raise Bad("Unknown compression mechanism")
    if session.compressed:
        raise No("Compression is already active", "COMPRESSIONACTIVE")
    if pending_input(session.reader):
        # Sent before the answer, so in clear: they run as sent, and the connection stays uncompressed.
        raise No("Commands came after COMPRESS before its answer: not compressing", "CLIENTBUG")
    session.tagged(cmd.tag, "OK", "DEFLATE active")
    await session.flush()
    compressing.start(session.writer, session.reader, session.compress_failed)
    session.compressed = True


async def _login_as(session: ImapSession, tag: str, user: str, key: str) -> None:
    session.check_login_allowed()
    try:
        principal = await session.server.authenticator.authenticate(
            user, key, "imap", client=session.client, service="imap"
        )
    except AuthRefused:
        raise No("Authentication failed", "AUTHENTICATIONFAILED") from None
    refusal = session.server.admit_user(session, principal.user_id)
    if refusal is not None:
        raise No(refusal, "LIMIT")
    session.principal = principal
    session.state = AUTHENTICATED
    session.tagged(tag, "OK", f"[CAPABILITY {' '.join(session.capabilities())}] Logged in")


# RFC 9051 §6.2.3 (LOGIN)
async def login(session: ImapSession, cmd: Login) -> None:
    await _login_as(session, cmd.tag, cmd.user, cmd.password)


# RFC 9051 §6.2.2 (AUTHENTICATE), RFC 4959 (SASL-IR), RFC 4616 (PLAIN)
async def authenticate(session: ImapSession, cmd: Authenticate) -> None:
    if cmd.mechanism != "PLAIN":
        raise No("Unsupported mechanism; use PLAIN", "CANNOT")
    session.check_login_allowed()
    response = cmd.initial
    if response is None:
        session.send(b"+ ")
        await session.flush()
        line = (await session.readline()).strip()
        if line == b"*":
            raise Bad("Authentication cancelled")
        if len(line) > limits.MAX_SASL_RESPONSE:
            raise Bad(f"Response too long (at most {limits.MAX_SASL_RESPONSE} octets)")
        try:
            response = base64.b64decode(line, validate=True)
        except ValueError:
            raise Bad("Invalid base64") from None
    pieces = response.split(b"\x00")
    if len(pieces) != 3:
        raise Bad("Malformed PLAIN response")
    if any(len(p) > limits.MAX_CREDENTIAL for p in pieces):
        raise Bad(f"User name or password too long (at most {limits.MAX_CREDENTIAL} octets)")
    authzid, user, password = (p.decode("utf-8", "replace") for p in pieces)
    if authzid and authzid.lower() != user.lower():
        password = ""  # acting as another user is not supported: refused like a wrong key
    await _login_as(session, cmd.tag, user, password)


# -- authenticated: RFC 9051 §6.3 --------------------------------------------------------


# RFC 9051 §6.3.1 (ENABLE)
async def enable(session: ImapSession, cmd: Enable) -> None:
    enabled = []
    for cap in cmd.capabilities:
        if cap == "IMAP4REV2":
            session.rev2 = session.utf8 = True
            enabled.append("IMAP4rev2")
        elif cap == "UTF8=ACCEPT":
            session.utf8 = True
            enabled.append("UTF8=ACCEPT")
        elif cap in ("CONDSTORE", "QRESYNC"):  # RFC 7162 §3.1, §3.2.3: QRESYNC implies CONDSTORE
            session.qresync = session.qresync or cap == "QRESYNC"
            session.enable_condstore()
            enabled.append(cap)
    session.untagged("ENABLED" + "".join(" " + c for c in enabled))
    session.tagged(cmd.tag, "OK", "ENABLE completed")


# RFC 9051 §6.3.2 (SELECT), §6.3.3 (EXAMINE)
async def select(session: ImapSession, cmd: Select) -> None:
    if cmd.qresync is not None and not session.qresync:
        raise Bad("QRESYNC needs ENABLE QRESYNC first")  # RFC 7162 §3.2.5
    if session.selected is not None:
        session.server.hub.unwatch(session, session.selected.mailbox_id)
        session.selected = None
        session.state = AUTHENTICATED
        session.untagged("OK [CLOSED] Previous mailbox closed")
    assert session.principal is not None
    # One statement, so one snapshot: the UIDs, flags and counters agree with each other.
    name = _existing_name(cmd.mailbox)
    takes_recent = not session.rev2 and not cmd.readonly
    # RFC 3501 §2.3.2: SELECT takes the messages no session has taken as recent yet; EXAMINE only looks.
    key = (session.principal.user_id, "INBOX" if mailboxes.is_inbox(name) else name)
    view = session.server.views.get(key)  # what a SELECT here read before (imap/views.py)
    box = await imap_messages.select_state(
        session.server.pool,
        session.principal.user_id,
        name,
        claim=takes_recent,
        known=None if view is None else (view.mailbox_id, view.modseq),
    )
    claimed = box["claimed"] if box is not None and takes_recent else None
    if box is None:
        raise No(f"No such mailbox {cmd.mailbox[:200]}", "NONEXISTENT")
    if not box["reused"] or view is None:
        view = View(box["id"], box["highestmodseq"], box["uids"], box["unseen"])
        session.server.views.keep(key, view)
    uids = imap_messages.uid_array(view.uids)
    unseen = view.unseen
    sel = Selected(
        mailbox_id=box["id"],
        name=box["name"],
        readonly=cmd.readonly,
        uidvalidity=box["uidvalidity"],
        uids=uids,
        known_modseq=box["highestmodseq"],
        max_uid=max(uids[-1] if uids else 0, box["uidnext"] - 1),
        flags=dict.fromkeys([*SYSTEM_FLAGS, *box["flags"]]),
        takes_recent=takes_recent,
    )
    if claimed is not None:
        sel.add_recent(*claimed)
    elif cmd.readonly and not session.rev2:
        sel.add_recent(box["recent_uid"], _NO_UID_ABOVE)  # what no session has taken, new mail included
    session.selected = sel
    session.untagged(b"FLAGS " + flag_list(sel.flags))
    session.untagged(f"{len(uids)} EXISTS")
    if not session.rev2:
        session.untagged(f"{sel.recent_count()} RECENT")
        if unseen is not None:
            msn = sel.msn(unseen)
            if msn is not None:
                session.untagged(f"OK [UNSEEN {msn}] First unseen")
    permanent = [] if cmd.readonly else [*sel.flags, "\\*"]
    session.untagged(b"OK [PERMANENTFLAGS " + flag_list(permanent) + b"] Flags permitted")
    session.untagged(f"OK [UIDVALIDITY {sel.uidvalidity}] UIDs valid")
    session.untagged(f"OK [UIDNEXT {box['uidnext']}] Predicted next UID")
    if cmd.condstore or cmd.qresync is not None:
        session.enable_condstore()  # RFC 7162 §3.1.8; nothing is selected, so nothing more is said
    if session.condstore:  # RFC 7162 §3.1.2.1
        session.untagged(f"OK [HIGHESTMODSEQ {box['highestmodseq']}] Highest")
    if session.rev2:  # RFC 9051 §6.3.2; IMAP4rev1 clients do not expect it
        session.untagged(b'LIST () "/" ' + astring(_mailbox_name(session, box["name"]), utf8=session.utf8))
    session.state = SELECTED
    session.server.hub.watch(session, sel.mailbox_id)
    if cmd.qresync is not None:
        try:
            await condstore.resync(session, sel, cmd.qresync, box["highestmodseq"])
        except BaseException:
            _deselect(session, sel)  # a SELECT that fails leaves no mailbox selected
            raise
    mode = "READ-ONLY" if cmd.readonly else "READ-WRITE"
    session.tagged(cmd.tag, "OK", f"{cmd.name} completed", mode)


# Above every UID (they are at most 2^32 - 1, RFC 9051 §2.3.1.1).
_NO_UID_ABOVE = 2**63 - 1


# RFC 9051 §6.3.4 (CREATE), RFC 6154 §5.3 (CREATE-SPECIAL-USE syntax)
async def create(session: ImapSession, cmd: MailboxCommand) -> None:
    assert session.principal is not None
    name = _check_name(cmd.mailbox)
    if mailboxes.is_inbox(name):
        raise No("INBOX always exists", "ALREADYEXISTS")
    special = None
    if isinstance(cmd, CreateSpecial):
        uses = [u for u in cmd.uses if u.title() in {s.title() for s in _SPECIAL_USES}]
        if len(uses) != len(cmd.uses) or len(uses) > 1:
            raise No("Unsupported special-use attribute", "USEATTR")
        special = next(s for s in _SPECIAL_USES if s.lower() == uses[0].lower()) if uses else None
    try:
        await mailboxes.create(
            session.server.pool, session.principal.user_id, name, special, limit=session.server.cfg.quota.mailboxes
        )
    except Conflict:
        raise No("Mailbox already exists", "ALREADYEXISTS") from None
    except TooMany as exc:
        raise No(f"Too many mailboxes: {exc}", "LIMIT") from None
    session.tagged(cmd.tag, "OK", "CREATE completed")


# RFC 9051 §6.3.5 (DELETE)
async def delete(session: ImapSession, cmd: MailboxCommand) -> None:
    assert session.principal is not None
    _existing_name(cmd.mailbox)
    if mailboxes.is_inbox(cmd.mailbox):
        raise No("INBOX cannot be deleted", "CANNOT")
    if session.selected is not None and session.selected.name == cmd.mailbox:
        raise No("Unselect the mailbox before deleting it", "INUSE")
    async with session.server.pool.acquire() as conn:
        try:
            await mailboxes.delete(conn, session.principal.user_id, cmd.mailbox)
        except NotFound:
            raise No("No such mailbox", "NONEXISTENT") from None
    session.tagged(cmd.tag, "OK", "DELETE completed")


# RFC 9051 §6.3.6 (RENAME)
async def rename(session: ImapSession, cmd: Rename) -> None:
    assert session.principal is not None
    _existing_name(cmd.old)
    new = _check_name(cmd.new)
    if mailboxes.is_inbox(new):
        raise No("Cannot rename to INBOX", "ALREADYEXISTS")
    if new.startswith(cmd.old + "/") and not mailboxes.is_inbox(cmd.old):
        # Its own parent would be made anew (RENAME makes missing parents): refused, as Dovecot does.
        raise No("Cannot rename a mailbox below itself", "CANNOT")
    user_id = session.principal.user_id
    async with session.server.pool.acquire() as conn:
        if mailboxes.is_inbox(cmd.old):
            # RFC 9051 §6.3.6: INBOX's messages move to the new name; INBOX stays, empty.
            source = await _mailbox(session, "INBOX")
            async with conn.transaction():
                try:
                    target = await mailboxes.create(conn, user_id, new)
                except Conflict:
                    raise No("Target mailbox exists", "ALREADYEXISTS") from None
                uids = await imap_messages.uids(conn, source["id"])
                await imap_messages.copy(conn, source["id"], uids, target["id"], move=True)
        else:
            try:
                await mailboxes.rename(conn, user_id, cmd.old, new)
            except NotFound:
                raise No("No such mailbox", "NONEXISTENT") from None
            except Conflict:
                raise No("Target mailbox exists", "ALREADYEXISTS") from None
    session.tagged(cmd.tag, "OK", "RENAME completed")


# RFC 9051 §6.3.7 (SUBSCRIBE), §6.3.8 (UNSUBSCRIBE)
async def subscribe(session: ImapSession, cmd: MailboxCommand) -> None:
    # A subscription is a name, with or without a mailbox (RFC 9051 §6.3.7 allows either); only one
    # that no mailbox could ever have is refused. UNSUBSCRIBE of a name not subscribed is OK, as in Dovecot.
    assert session.principal is not None
    name = _check_name(cmd.mailbox)
    name = "INBOX" if mailboxes.is_inbox(name) else name
    if cmd.name == "SUBSCRIBE":
        try:
            await mailboxes.subscribe(
                session.server.pool, session.principal.user_id, [name], limit=session.server.cfg.quota.mailboxes
            )
        except TooMany as exc:
            raise No(f"Too many subscriptions: {exc}", "LIMIT") from None
    else:
        await mailboxes.unsubscribe(session.server.pool, session.principal.user_id, name)
    session.tagged(cmd.tag, "OK", f"{cmd.name} completed")


@dataclass(frozen=True)
class _Listed:
    """One LIST/LSUB response line to send."""

    name: str
    attrs: tuple[str, ...]
    childinfo: bool  # RFC 5258 §3.5: a subscribed name below this one is matched by no pattern
    box: dict[str, Any] | None  # the mailbox; None for a name that has none


def _list_rows(boxes: list[dict[str, Any]], subscribed: frozenset[str], cmd: ListCommand, rev2: bool) -> list[_Listed]:
    """What LIST/LSUB answers for these mailboxes and subscribed names; pure CPU, linear in names times patterns.

    LIST lists mailboxes, and the names above them that have none (\\NonExistent, or \\Noselect for a
    rev1 client's plain LIST). LSUB and LIST (SUBSCRIBED) list subscribed names, mailbox or not
    (RFC 5258 §3.1). With RECURSIVEMATCH (always, for LSUB: RFC 3501 §6.3.9), a name some pattern
    matches is listed too when a subscribed name below it is matched by none, with CHILDINFO
    ("SUBSCRIBED") (for LSUB, as \\Noselect if not subscribed itself); Dovecot answers alike, and a
    child the patterns match is listed itself instead (imaptest's listext group).
    """
    by_name = {b["name"]: b for b in boxes}
    with_children: set[str] = set()  # names with a mailbox below them
    for name in by_name:
        with_children.update(mailboxes.ancestors(name))
    # A pattern (or reference) that is not valid modified UTF-7 can match no name: it is left out.
    patterns = [
        listmatch.Pattern(cmd.reference, p)
        for p in cmd.patterns
        if not isinstance(p, UndecodableName) and not isinstance(cmd.reference, UndecodableName)
    ]

    def matched(name: str) -> bool:
        return any(p.matches(name) for p in patterns)

    subscribed_only = cmd.lsub or "SUBSCRIBED" in cmd.select
    childinfo: set[str] = set()
    if subscribed_only and (cmd.lsub or "RECURSIVEMATCH" in cmd.select):
        for name in subscribed:
            if not matched(name):
                childinfo.update(mailboxes.ancestors(name))
    candidates = (subscribed | childinfo) if subscribed_only else (by_name.keys() | with_children)
    special_only = "SPECIAL-USE" in cmd.select
    missing = "\\NonExistent" if rev2 or cmd.extended else "\\Noselect"
    show_subscribed = rev2 or "SUBSCRIBED" in cmd.returns or subscribed_only
    show_special = not cmd.returns or "SPECIAL-USE" in cmd.returns or special_only
    out = []
    for name in sorted(candidates, key=lambda n: (not mailboxes.is_inbox(n), n)):
        box = by_name.get(name)
        if (special_only and not (box and box["special_use"])) or not matched(name):
            continue
        attrs = []
        if cmd.lsub:
            if name not in subscribed:
                attrs.append("\\Noselect")  # listed only as the parent of subscribed names
        elif box is None:
            attrs.append(missing)
        attrs.append("\\HasChildren" if name in with_children else "\\HasNoChildren")
        if name in subscribed and show_subscribed:
            attrs.append("\\Subscribed")
        if box and box["special_use"] and show_special:
            attrs.append(box["special_use"])
        out.append(_Listed(name, tuple(attrs), name in childinfo and not cmd.lsub, box))
    return out


# Above this many (name, pattern) pairs, LIST does its matching in a worker thread.
_LIST_INLINE = 2000


# RFC 9051 §6.3.9 (LIST), RFC 5258 (LIST-EXTENDED), RFC 5819 (LIST-STATUS), RFC 6154 (SPECIAL-USE),
# RFC 3501 §6.3.9 (LSUB)
async def list_(session: ImapSession, cmd: ListCommand) -> None:
    assert session.principal is not None
    if cmd.patterns == ("",) and not cmd.lsub and not cmd.extended:
        session.untagged(b'LIST (\\Noselect) "/" ""')  # the delimiter and root (RFC 9051 §6.3.9)
        session.tagged(cmd.tag, "OK", f"{cmd.name} completed")
        return
    user_id = session.principal.user_id
    boxes, subscribed = await mailboxes.listing(session.server.pool, user_id)
    if (len(boxes) + len(subscribed)) * len(cmd.patterns) > _LIST_INLINE:
        rows = await asyncio.to_thread(_list_rows, boxes, subscribed, cmd, session.rev2)
    else:
        rows = _list_rows(boxes, subscribed, cmd, session.rev2)
    verb = "LSUB" if cmd.lsub else "LIST"
    for row in rows:
        line = f'{verb} ({" ".join(row.attrs)}) "/" '.encode() + astring(
            _mailbox_name(session, row.name), utf8=session.utf8
        )
        if row.childinfo:
            line += b' ("CHILDINFO" ("SUBSCRIBED"))'
        session.untagged(line)
        if cmd.status_items and row.box is not None:
            session.untagged(await _status_line(session, row.box, cmd.status_items))
    session.tagged(cmd.tag, "OK", f"{cmd.name} completed")


# The mailboxes whose STATUS counts a session keeps (ImapSession.status_counts), at most.
_STATUS_COUNTS_KEPT = 32
_STATUS_NAMES = {
    "MESSAGES": "messages",
    "UIDNEXT": "uidnext",
    "UIDVALIDITY": "uidvalidity",
    "UNSEEN": "unseen",
    "DELETED": "deleted",
    "SIZE": "size",
    "HIGHESTMODSEQ": "highestmodseq",
    "DELETED-STORAGE": "deleted_storage",  # RFC 9208 §4.1.4
    "RECENT": "recent",  # RFC 3501 §6.3.10; IMAP4rev2 has no \\Recent (RFC 9051 §6.3.11)
}


def _status_values(session: ImapSession, items: tuple[str, ...]) -> frozenset[str]:
    """The store's STATUS values these items need (an unknown item is BAD before anything is asked)."""
    for item in items:
        if item not in _STATUS_NAMES:
            raise Bad(f"Unknown status item {item[:40]}")
    if "HIGHESTMODSEQ" in items:
        session.enable_condstore()  # RFC 7162 §3.1.6
    return frozenset(_STATUS_NAMES[i] for i in items if not (i == "RECENT" and session.rev2))


def _status_text(session: ImapSession, box: dict[str, Any], items: tuple[str, ...]) -> bytes:
    out = [f"{item} {0 if item == 'RECENT' and session.rev2 else box[_STATUS_NAMES[item]]}" for item in items]
    return b"STATUS " + astring(_mailbox_name(session, box["name"]), utf8=session.utf8) + f" ({' '.join(out)})".encode()


async def _status_line(session: ImapSession, box: dict[str, Any], items: tuple[str, ...]) -> bytes:
    values = await mailboxes.status(session.server.pool, box["id"], _status_values(session, items))
    return _status_text(session, values, items)


# RFC 9051 §6.3.11 (STATUS), RFC 8438 (STATUS=SIZE)
async def status(session: ImapSession, cmd: Status) -> None:
    assert session.principal is not None
    values = _status_values(session, cmd.items)
    name = _existing_name(cmd.mailbox)
    key = "INBOX" if mailboxes.is_inbox(name) else name
    # Counts this session made of the mailbox are not made again while its modseq says they still hold
    # (mailboxes.COUNTED): a client polling STATUS of a big unchanged mailbox costs no count over it.
    counted = values & mailboxes.COUNTED
    earlier = session.status_counts.get(key)
    known = earlier[:2] if earlier is not None and counted and counted <= earlier[2].keys() else None
    box = await mailboxes.status_named(session.server.pool, session.principal.user_id, name, values, known)
    if box is None:
        raise No(f"No such mailbox {cmd.mailbox[:200]}", "NONEXISTENT")
    if known is not None and earlier is not None and (box["id"], box["highestmodseq"]) == known:
        box.update({v: earlier[2][v] for v in counted})
    elif counted:
        if len(session.status_counts) >= _STATUS_COUNTS_KEPT:
            session.status_counts.clear()
        session.status_counts[key] = (box["id"], box["highestmodseq"], {v: box[v] for v in counted})
    session.untagged(_status_text(session, box, cmd.items))
    session.tagged(cmd.tag, "OK", "STATUS completed")


# RFC 9051 §6.3.12 (APPEND), RFC 4315 (APPENDUID), RFC 7889 (APPENDLIMIT), RFC 9208 §4.3.1 (OVERQUOTA),
# RFC 3502 (MULTIAPPEND), RFC 4469 (CATENATE), RFC 3516 §4.3 (binary data); imap/append.py stores them
async def append(session: ImapSession, cmd: Append) -> None:
    assert session.principal is not None
    _existing_name(cmd.mailbox)  # a name that cannot exist: NONEXISTENT, not TRYCREATE (CREATE would fail)
    try:
        box = await _mailbox(session, cmd.mailbox)
    except No:
        raise No("No such mailbox", "TRYCREATE") from None
    flags = [_flags(message.flags) for message in cmd.messages]
    try:
        await appending.append(session, cmd, box, flags)
    except OverQuota:  # one message past a limit: none stored (RFC 3502 §6.3.11)
        raise _over_quota(session, cmd) from None


# RFC 9051 §6.3.10 (NAMESPACE)
async def namespace(session: ImapSession, cmd: Command) -> None:
    session.untagged('NAMESPACE (("" "/")) NIL NIL')
    session.tagged(cmd.tag, "OK", "NAMESPACE completed")


# RFC 9051 §6.3.13 (IDLE); under NOTIFY, RFC 5465 §4: what NOTIFY asked for, expunges included
async def idle(session: ImapSession, cmd: Command) -> None:
    session.send(b"+ idling")
    await session.flush()
    done = asyncio.ensure_future(session.readline())
    warned = False
    try:
        while True:
            news = [asyncio.ensure_future(w) for w in session.news_waiters(idle=True)]
            session.waiting = True  # a shutdown may say BYE right here
            session.idling = True  # the change hub may write news itself meanwhile (ChangeHub.push)
            try:
                finished, _ = await asyncio.wait(
                    [done, *news], timeout=session.cfg.idle_timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                session.waiting = session.idling = False
                for waiter in news:
                    waiter.cancel()
            if not finished:
                raise Bye("Autologout; idle for too long")
            if done in finished:
                break
            try:
                await session.report_news(idle=True)
            except DB_UNAVAILABLE as exc:
                if isinstance(exc, OSError) and session.writer.is_closing():
                    raise
                # The database is out of reach: keep idling, the news stays pending; try again shortly.
                if not warned:
                    log.warning("imap-tempfail client=%s command=IDLE error=%s", session.client, describe(exc))
                    warned = True
                await asyncio.wait([done], timeout=NEWS_RETRY)
                continue
        line = done.result().strip()
        if line.upper() != b"DONE":
            raise Bad("Expected DONE")
    finally:
        if not done.done():
            done.cancel()
    if session.reports_selected():
        await session.sync()
    session.tagged(cmd.tag, "OK", "IDLE terminated", condstore.highest_code(session))


# -- selected: RFC 9051 §6.4 ---------------------------------------------------------------


def _resolve(sel: Selected, seqset: SeqSet, uid: bool) -> list[int]:
    """The UIDs a sequence set (message numbers or UIDs, ``$`` included) names, ascending."""
    if seqset.saved:
        wanted = set(sel.saved)
        return [u for u in sel.uids if u in wanted]
    if not sel.uids:
        if uid:
            return []
        raise Bad("The mailbox is empty")
    if uid:
        # Binary search per range: 1:4294967295 costs what the mailbox holds, not four billion steps.
        return seqset.resolve(sel.uids[-1]).pick(sel.uids)
    count = len(sel.uids)
    out: list[int] = []
    for lo, hi in seqset.resolve(count):  # disjoint and ascending: no duplicates, no sort
        if lo < 1 or hi > count:
            raise Bad("Message number out of range")
        out.extend(sel.uids[lo - 1 : hi])
    return out


# RFC 9051 §6.4.1 (CLOSE), §6.4.2 (UNSELECT)
async def close(session: ImapSession, cmd: Command) -> None:
    sel = session.require_selected()
    if cmd.name == "CLOSE" and not sel.readonly:
        async with session.server.pool.acquire() as conn:
            await imap_messages.expunge(conn, sel.mailbox_id, None, durable=session.server.cfg.imap.durable_changes)
    _deselect(session, sel)
    session.tagged(cmd.tag, "OK", f"{cmd.name} completed")


def _deselect(session: ImapSession, sel: Selected) -> None:
    session.server.hub.unwatch(session, sel.mailbox_id)
    session.selected = None
    session.state = AUTHENTICATED


# RFC 9051 §6.4.3 (EXPUNGE), RFC 4315 §2.1 (UID EXPUNGE)
async def expunge(session: ImapSession, cmd: Command) -> None:
    sel = session.require_selected()
    if sel.readonly:
        raise No("Mailbox is read-only", "READ-ONLY")
    uid_list = _resolve(sel, cmd.seqset, True) if isinstance(cmd, UidExpunge) else None
    async with session.server.pool.acquire() as conn:
        removed = await imap_messages.expunge(
            conn, sel.mailbox_id, uid_list, durable=session.server.cfg.imap.durable_changes
        )
    if not await session.own_change(sel.mailbox_id, removed.modseq, expunged=removed.uids):
        await session.sync()
    session.tagged(cmd.tag, "OK", f"{cmd.name} completed", condstore.highest_code(session, expunge=True))


# RFC 9051 §6.4.4 (SEARCH), RFC 4731 (ESEARCH), RFC 5182 (SEARCHRES), RFC 5267 §4 (CONTEXT=SEARCH), RFC 9394
async def search(session: ImapSession, cmd: Search) -> None:
    sel = session.require_selected()
    if cmd.returns and "UPDATE" in cmd.returns:
        contexts.check_tag(sel, cmd.tag)
    if cmd.returns and "SAVE" in cmd.returns:
        sel.saved = []  # RFC 5182 §2.1: a failed SEARCH ... SAVE leaves $ empty
    modseqs: dict[int, int] | None = None
    if condstore.uses_modseq(cmd.key):
        session.enable_condstore()  # RFC 7162 §3.1.5
        modseqs = {}
    async with session.server.pool.acquire() as conn:
        uids = await searching.run(conn, sel, cmd.key, charset=cmd.charset, modseqs=modseqs)
    if cmd.returns is None and not session.rev2:
        numbers = uids if cmd.uid else [n for n in (sel.msn(u) for u in uids) if n is not None]
        modseq = condstore.search_modseq(None, uids, modseqs) if modseqs is not None else None
        session.untagged("SEARCH" + "".join(f" {n}" for n in numbers) + (f" (MODSEQ {modseq})" if modseq else ""))
    else:
        # A rev2 plain SEARCH means RETURN (ALL).
        await ordering.answer(session, sel, cmd, uids, program=None, modseqs=modseqs)
    await session.sync_after(cmd)
    session.tagged(cmd.tag, "OK", f"{'UID ' if cmd.uid else ''}SEARCH completed")


# RFC 9051 §6.4.5 (FETCH), §6.4.9 (UID FETCH)
async def fetch(session: ImapSession, cmd: Fetch) -> None:
    sel = session.require_selected()
    uids = _resolve(sel, cmd.seqset, cmd.uid)
    pool = session.server.pool
    atts = cmd.atts
    if cmd.vanished and not session.qresync:
        raise Bad("VANISHED needs ENABLE QRESYNC first")  # RFC 7162 §3.2.6
    if cmd.changed_since is not None or any(a.name == "MODSEQ" for a in atts):
        session.enable_condstore()  # RFC 7162 §3.1.4
    if cmd.changed_since is not None:
        if cmd.vanished:
            await condstore.report_vanished(session, sel, cmd.seqset, cmd.changed_since)
        uids = await condstore.changed(session, sel, uids, cmd.changed_since)
        atts = condstore.with_modseq(atts)
    if uids and fetching.sets_seen(cmd.atts) and not sel.readonly:
        async with pool.acquire() as conn:
            modseq, seen = await imap_messages.store_flags(
                conn, sel.mailbox_id, uids, "+", ["\\Seen"], durable=session.server.cfg.imap.durable_changes
            )
        if not (seen and await session.own_change(sel.mailbox_id, modseq)):
            sel.own_modseqs.add(modseq)
        atts = atts if any(a.name == "FLAGS" for a in atts) else (*atts, _FLAGS)
        if seen and session.condstore:  # RFC 7162 §3.1, §3.2.4: \Seen set by FETCH
            atts = condstore.with_modseq(atts, uid=session.qresync)
    with_raw = fetching.needs_raw(atts)
    header_only = with_raw and fetching.header_only(atts)
    columns = fetching.columns(atts)
    utf8 = session.utf8
    decodes = fetching.decodes(atts)
    previews = previewing.wanted(atts)
    with_flags = any(a.name == "FLAGS" for a in atts)
    known = sel.flags  # the flags the client has been told of (announce_flags adds to it)
    for start in range(0, len(uids), _FETCH_ROWS):
        group = uids[start : start + _FETCH_ROWS]
        while group:
            async with pool.acquire() as conn:
                rows = await imap_messages.fetch(
                    conn,
                    sel.mailbox_id,
                    group,
                    with_raw=with_raw,
                    columns=columns,
                    utf8=utf8,
                    max_bytes=_FETCH_BYTES if with_raw else None,
                    header_only=header_only,
                )
            # With the raw bytes, the rows may stop short of the group (_FETCH_BYTES): the rest comes next.
            group = group[bisect.bisect_right(group, rows[-1]["uid"]) :] if with_raw and rows else []
            if previews:
                rows = await previewing.fill(session, sel.mailbox_id, rows)
            for row in rows:
                msn = sel.msn(row["uid"])
                if msn is None:
                    continue
                recent = False
                if with_flags:
                    for flag in row["flags"]:  # inline: this runs once per message of a FETCH 1:* FLAGS
                        if flag not in known:
                            session.announce_flags(row["flags"])
                            break
                    recent = bool(sel.recent) and sel.is_recent(row["uid"])
                if not with_raw:
                    session.send(b"* %d FETCH " % msn + fetching.render(row, atts, utf8=utf8, recent=recent))
                    continue
                raw = bytes(row["raw"])
                if decodes and len(raw) > _DECODE_INLINE:  # BINARY of a large message: decoded off the loop
                    pieces = await asyncio.to_thread(fetching.render_pieces, row, raw, atts, utf8=utf8, recent=recent)
                else:
                    pieces = fetching.render_pieces(row, raw, atts, utf8=utf8, recent=recent)
                session.send_pieces([b"* %d FETCH " % msn, *pieces])
                if session.pending >= _FETCH_FLUSH:
                    await session.flush()  # waits for the client to take it: the buffer stays small
            del rows
        if not session.more_pipelined():
            await session.flush()
    await session.sync_after(cmd)
    session.tagged(cmd.tag, "OK", f"{'UID ' if cmd.uid else ''}FETCH completed")


_FLAGS = FetchAtt("FLAGS")
# FETCH reads this many messages per query; with raw bytes, groups of at most _FETCH_BYTES (by the
# messages' sizes, at least one message), so FETCH 1:* BODY[] holds a bounded part of the mailbox.
_FETCH_ROWS = 2000
_FETCH_BYTES = 16 * 1024 * 1024
# Buffered output past this many octets is written (and drained) before the next message is rendered.
_FETCH_FLUSH = 1024 * 1024
# BINARY of a message up to this size is decoded on the event loop, of a bigger one in a worker thread.
_DECODE_INLINE = 256 * 1024


# RFC 9051 §6.4.6 (STORE)
async def store(session: ImapSession, cmd: Store) -> None:
    sel = session.require_selected()
    if sel.readonly:
        raise No("Mailbox is read-only", "READ-ONLY")
    uids = _resolve(sel, cmd.seqset, cmd.uid)
    flags = _flags(cmd.flags)
    failed: list[int] = []
    async with session.server.pool.acquire() as conn:
        if cmd.unchanged_since is None:
            modseq, changed = await imap_messages.store_flags(
                conn, sel.mailbox_id, uids, cmd.mode, flags, durable=session.server.cfg.imap.durable_changes
            )
        else:
            session.enable_condstore()  # RFC 7162 §3.1.3
            modseq, changed, failed = await imap_messages.store_flags_unchanged_since(
                conn, sel.mailbox_id, uids, cmd.mode, flags, cmd.unchanged_since
            )
    if not (changed and await session.own_change(sel.mailbox_id, modseq)):
        sel.own_modseqs.add(modseq)
    session.announce_flags(f for _, new_flags in changed for f in new_flags)
    for uid, new_flags in changed:
        msn = sel.msn(uid)
        if msn is None:
            continue
        flag_part = b"" if cmd.silent else b"FLAGS " + flag_list(sel.flags_of(uid, new_flags))
        if session.condstore:  # RFC 7162 §3.1.3: MODSEQ, .SILENT or not; §3.2.4: and UID under QRESYNC
            items = [b"UID %d" % uid if cmd.uid or session.qresync else b"", flag_part, b"MODSEQ (%d)" % modseq]
            session.untagged(b"%d FETCH (" % msn + b" ".join(i for i in items if i) + b")")
        elif not cmd.silent:
            uid_part = f"UID {uid} " if cmd.uid else ""
            session.untagged(f"{msn} FETCH ({uid_part}".encode() + flag_part + b")")
    await session.sync_after(cmd)
    code = condstore.modified_code(sel, failed, cmd.uid)
    session.tagged(cmd.tag, "OK", f"{'UID ' if cmd.uid else ''}STORE completed", code)


# RFC 9051 §6.4.7 (COPY), §6.4.8 (MOVE), RFC 4315 (COPYUID)
async def copy_move(session: ImapSession, cmd: CopyMove) -> None:
    sel = session.require_selected()
    if cmd.name == "MOVE" and sel.readonly:
        raise No("Mailbox is read-only", "READ-ONLY")
    _existing_name(cmd.mailbox)  # a name that cannot exist: NONEXISTENT, not TRYCREATE (CREATE would fail)
    try:
        target = await _mailbox(session, cmd.mailbox)
    except No:
        raise No("No such mailbox", "TRYCREATE") from None
    uids = _resolve(sel, cmd.seqset, cmd.uid)
    async with session.server.pool.acquire() as conn:
        try:
            pairs = await imap_messages.copy(
                conn, sel.mailbox_id, uids, target["id"], move=cmd.name == "MOVE", limits=session.server.cfg.quota
            )
        except OverQuota:
            raise _over_quota(session, cmd) from None
    code = None
    if pairs:
        code = (
            f"COPYUID {target['uidvalidity']} {searching.compact([p[0] for p in pairs])} "
            f"{searching.compact([p[1] for p in pairs])}"
        )
    if cmd.name == "MOVE":
        if code:
            session.untagged(f"OK [{code}] Moved")
        await session.sync()
        code = condstore.highest_code(session)  # the source's expunges were VANISHED under QRESYNC
        session.tagged(cmd.tag, "OK", f"{'UID ' if cmd.uid else ''}MOVE completed", code)
        return
    if target["id"] == sel.mailbox_id:
        await session.sync()  # copied into the selected mailbox: EXISTS now, not when the NOTIFY comes
    else:
        await session.sync_after(cmd)
    session.tagged(cmd.tag, "OK", f"{'UID ' if cmd.uid else ''}COPY completed", code)


# -- quota: RFC 9208 -------------------------------------------------------------------------


def _quota_response(usage: quota.Usage) -> bytes | None:
    """The QUOTA response for the user's one root (RFC 9208 §4.2.1), STORAGE in units of 1024 octets
    (usage rounded up, the limit down: never shown below a limit it has reached); None when no limit
    applies, since a QUOTA response names at least one resource (§7, quota-list)."""
    resources = []
    if usage.limits.storage is not None:
        resources.append(f"STORAGE {-(-usage.storage // 1024)} {usage.limits.storage // 1024}")
    if usage.limits.messages is not None:
        resources.append(f"MESSAGE {usage.messages} {usage.limits.messages}")
    if not resources:
        return None
    return b"QUOTA " + astring(quota.ROOT) + f" ({' '.join(resources)})".encode()


async def _quota_usage(session: ImapSession) -> quota.Usage:
    assert session.principal is not None
    user_id = session.principal.user_id
    found = await quota.usage(session.server.pool, [user_id], session.server.cfg.quota)
    if user_id not in found:
        raise No("No such quota root", "NONEXISTENT")  # the user was removed meanwhile
    return found[user_id]


# RFC 9208 §4.1.2 (GETQUOTAROOT): every mailbox is under the user's one root, "", while a limit applies
async def getquotaroot(session: ImapSession, cmd: MailboxCommand) -> None:
    box = await _mailbox(session, cmd.mailbox)
    response = _quota_response(await _quota_usage(session))
    name = astring(_mailbox_name(session, box["name"]), utf8=session.utf8)
    session.untagged(b"QUOTAROOT " + name + (b" " + astring(quota.ROOT) if response else b""))
    if response:
        session.untagged(response)
    session.tagged(cmd.tag, "OK", "GETQUOTAROOT completed")


# RFC 9208 §4.1.1 (GETQUOTA)
async def getquota(session: ImapSession, cmd: QuotaRoot) -> None:
    response = _quota_response(await _quota_usage(session)) if cmd.root == quota.ROOT else None
    if response is None:
        raise No("No such quota root", "NONEXISTENT")
    session.untagged(response)
    session.tagged(cmd.tag, "OK", "GETQUOTA completed")


# RFC 9208 §4.1.3 (SETQUOTA): QUOTASET is not offered; limits are the administrator's (relatectl user quota)
async def setquota(session: ImapSession, cmd: SetQuota) -> None:
    raise No("Quota limits are set by the administrator", "NOPERM")


HANDLERS: dict[str, Handler] = {
    "CAPABILITY": capability,
    "NOOP": noop,
    "CHECK": noop,
    "LOGOUT": logout,
    "ID": id_,
    "STARTTLS": starttls,
    "LOGIN": login,
    "AUTHENTICATE": authenticate,
    "ENABLE": enable,
    "SELECT": select,
    "EXAMINE": select,
    "CREATE": create,
    "DELETE": delete,
    "RENAME": rename,
    "SUBSCRIBE": subscribe,
    "UNSUBSCRIBE": subscribe,
    "LIST": list_,
    "LSUB": list_,
    "NAMESPACE": namespace,
    "STATUS": status,
    "APPEND": append,
    "IDLE": idle,
    "CLOSE": close,
    "UNSELECT": close,
    "EXPUNGE": expunge,
    "UID EXPUNGE": expunge,
    "SEARCH": search,
    "FETCH": fetch,
    "STORE": store,
    "COPY": copy_move,
    "MOVE": copy_move,
    "SORT": ordering.sort,
    "THREAD": ordering.thread,
    "CANCELUPDATE": ordering.cancelupdate,
    "GETQUOTA": getquota,
    "GETQUOTAROOT": getquotaroot,
    "SETQUOTA": setquota,
    "NOTIFY": notifying.notify,
    "COMPRESS": compress,
}

_ANY = {"CAPABILITY", "NOOP", "LOGOUT", "ID"}
_AUTHENTICATED = _ANY | {
    "ENABLE", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE",
    "LIST", "LSUB", "NAMESPACE", "STATUS", "APPEND", "IDLE",
    "GETQUOTA", "GETQUOTAROOT", "SETQUOTA", "NOTIFY", "COMPRESS",
}  # fmt: skip
ALLOWED: dict[str, frozenset[str]] = {
    NOT_AUTHENTICATED: frozenset(_ANY | {"STARTTLS", "LOGIN", "AUTHENTICATE"}),
    AUTHENTICATED: frozenset(_AUTHENTICATED),
    SELECTED: frozenset(
        _AUTHENTICATED
        | {"CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "UID EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE"}
        | {"SORT", "THREAD", "CANCELUPDATE"}
    ),
    LOGOUT: frozenset(),
}
