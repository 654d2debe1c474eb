"""What becomes of a message by the recipients' sender lists and rspamd's verdict, and the X-Spam-* fields it gets.

Policy, in order (after relate.mailauth, whose refusals come first: an
allow-listed sender never gets past the refusal of a forged hosted From,
and a DMARC quarantine still files in Junk):

1. Sender lists. Each recipient's allow and block lists are matched against
   the envelope sender and every From address (an entry is an address or a
   domain, which covers its subdomains). A block wins over an allow. A
   recipient who blocks the sender gets the message in Junk, or, when
   ``smtp.rspamd.block_action`` is ``refuse`` and every recipient blocks
   it, the message is refused (``550 5.7.1``). A recipient who allows the
   sender gets it in INBOX whatever rspamd says.
2. rspamd (``smtp.rspamd.url``; off when empty) is asked unless the lists
   decided for every recipient, the message is larger than
   ``smtp.rspamd.max_size``, or it was submitted by an authenticated user
   and ``smtp.rspamd.check_submission`` is off. Its action: ``reject``:
   ``550 5.7.1``; ``soft reject`` or ``greylist``: ``451 4.7.1``; ``add
   header``: Junk; ``rewrite subject``: the Subject becomes the one rspamd
   gives (its ``subject``; folded, control characters made spaces, non-ASCII
   put in RFC 2047 words) and the message goes to INBOX, or Junk with
   ``smtp.rspamd.rewrite_subject_folder: junk`` (Junk too when rspamd gave no
   subject, and for mail a user submitted, whose copies going out must stay
   as the user wrote them); ``no action``: INBOX. When a recipient allows
   the sender, a refusal cannot be said to the others alone after DATA: the
   message is accepted, and their copies go to Junk; nor can the subject be
   changed for them alone (one stored copy): it is left as it came, and
   their copies go to Junk.
3. rspamd unreachable (or answering nonsense): with ``on_unreachable:
   accept`` the message is delivered unchecked, with ``tempfail`` it gets
   ``451 4.7.1``. The log says so once per ``WARN_EVERY`` seconds, with the
   number of messages since, not once per message.
4. Every message the filter looked at gets ``X-Spam-Status`` (``Yes``/``No``,
   the score, the threshold, the action, or why rspamd was not asked),
   ``X-Spam-Score`` and ``X-Spam-Symbols`` when rspamd answered; fields of
   these names already in the message are removed first (a sender's own
   ``X-Spam-Status: No`` must not be read as ours).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import Header

import asyncpg

from relate.config import RspamdConfig
from relate.mail.mime import field_addresses
from relate.mail.spool import Spool
from relate.spam.rspamd import MAX_SYMBOLS, Envelope, Result, Rspamd, Unreachable
from relate.store import spam as store

log = logging.getLogger("relate.spam")

DELIVER = "deliver"
JUNK = "junk"
REFUSE = "refuse"
DEFER = "defer"
WARN_EVERY = 60.0  # seconds between two log lines saying rspamd cannot be reached
HEADER_ON_LOOP = 16 * 1024  # a header section up to this size is read for From on the event loop
# The fields we write, removed first wherever they are in the header section (with their continuation lines).
_OURS = re.compile(rb"^x-spam-(?:status|score|symbols)[ \t]*+:[^\n]*+\n?(?:[ \t][^\n]*+\n?)*+", re.I | re.M)
_SUBJECT = re.compile(rb"^subject[ \t]*+:[^\n]*+\n?(?:[ \t][^\n]*+\n?)*+", re.I | re.M)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_FOLD_AT = 76
_LONGEST_WORD = 900


@dataclass(frozen=True)
class SpamVerdict:
    action: str  # deliver, refuse (550 5.7.1), defer (451 4.7.1)
    fields: bytes = b""  # the X-Spam-* fields to put at the top ("" when the filter is off)
    junk: frozenset[int] = frozenset()  # users whose copy goes to Junk (action deliver)
    reason: str = ""  # for the log
    result: Result | None = None  # rspamd's answer, when it was asked and answered
    strip: bool = False  # remove X-Spam-* fields the message came with
    subject: bytes = b""  # the Subject field to put in place of the message's (rspamd's "rewrite subject")


def strip_fields(section: bytes) -> bytes | None:
    """The header section without the X-Spam-* fields we write (continuation lines included); None when it
    has none. One regular-expression pass, linear in the section, after a substring test (one C pass: most
    mail has no such field, and the expression steps through every byte in Python's engine)."""
    if b"x-spam-" not in section.lower():
        return None
    stripped, count = _OURS.subn(b"", section)
    return stripped if count else None


def subject_field(subject: str) -> bytes:
    """The ``Subject:`` field (CRLF-terminated) for the subject rspamd gives: control characters (a CR or LF
    would start a field of the sender's choosing) made spaces, non-ASCII text (and a word too long for a
    line) put in RFC 2047 words (rspamd encodes it already when the original was), folded between words."""
    text = _CONTROL.sub(" ", subject).strip()
    # A word too long for a line (RFC 5322 §2.1.1: 998) is put in encoded words too, which may be split.
    if not text.isascii() or max(map(len, text.split(" "))) > _LONGEST_WORD:
        text = Header(text, "utf-8").encode(linesep=" ")
    return _fold("Subject", text.split(" "), sep="", indent=" ")


def replace_subject(section: bytes, field: bytes) -> bytes:
    """The header section with ``field`` in place of its Subject field (every one, when it has several; before
    the blank line when it has none). One regular-expression pass, linear in the section."""
    found = _SUBJECT.search(section)
    if found is not None:
        start = found.start()
        return section[:start] + field + _SUBJECT.sub(b"", section[start:])
    if section in (b"\r\n", b"\n"):
        at = 0
    elif section.endswith(b"\r\n\r\n"):
        at = len(section) - 2
    elif section.endswith(b"\n\n"):
        at = len(section) - 1
    else:
        at = len(section)
    return section[:at] + field + section[at:]


def _fold(name: str, items: Sequence[str], sep: str = ",", indent: str = "\t") -> bytes:
    """``name: a, b, c`` folded before an item when a line would pass _FOLD_AT characters."""
    lines = [f"{name}:"]
    for i, item in enumerate(items):
        text = item + (sep if i < len(items) - 1 else "")
        if text and len(lines[-1]) + 1 + len(text) > _FOLD_AT and len(lines[-1]) > len(name) + 1:
            lines.append(indent + text)
        else:
            lines[-1] += " " + text
    return ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")


def render(result: Result | None, skipped: str = "") -> bytes:
    """The X-Spam-* fields for rspamd's answer, or X-Spam-Status alone saying why it was not asked."""
    if result is None:
        return f"X-Spam-Status: No, skipped={skipped}\r\n".encode("ascii", "replace")
    spam = result.action != "no action"
    status = (
        f"X-Spam-Status: {'Yes' if spam else 'No'}, score={result.score:.2f} required={result.required:.2f} "
        f"action={result.action.replace(' ', '_')}\r\n"
    ).encode()
    listed = [f"{name}({score:.2f})" for name, score in result.symbols]
    symbols = _fold("X-Spam-Symbols", listed) if listed else b""
    return status + f"X-Spam-Score: {result.score:.2f}\r\n".encode() + symbols


_SYMBOL = re.compile(r"([^\s,()]+)\((-?[0-9.]+)\)")


def read_back(status: str, symbols: str | None) -> dict[str, object]:
    """What :func:`render` wrote, read back from the values of X-Spam-Status and X-Spam-Symbols (for the REST
    detail): spam yes or no, the score, the threshold, rspamd's action, why it was not asked, the symbols."""
    verdict, _, rest = status.partition(",")
    words = dict(w.split("=", 1) for w in rest.split() if "=" in w)

    def number(key: str) -> float | None:
        try:
            return float(words[key])
        except (KeyError, ValueError):
            return None

    return {
        "spam": verdict.strip().lower() == "yes",
        "score": number("score"),
        "required": number("required"),
        "action": words["action"].replace("_", " ") if "action" in words else None,
        "skipped": rest.strip().removeprefix("skipped=") if rest.strip().startswith("skipped=") else None,
        "symbols": [{"name": n, "score": float(v)} for n, v in _SYMBOL.findall(symbols or "")][:MAX_SYMBOLS],
    }


class SpamFilter:
    """The SMTP daemon's spam filter: one per process, sharing the rspamd client."""

    def __init__(self, cfg: RspamdConfig, pool: asyncpg.Pool) -> None:
        self.cfg = cfg
        self.pool = pool
        self.rspamd = Rspamd(cfg)
        self._warned_at = -WARN_EVERY  # monotonic time of the last "unreachable" line
        self._unwarned = 0  # messages that met an unreachable rspamd since that line

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.url)

    async def close(self) -> None:
        await self.rspamd.close()

    async def judge(
        self, message: Spool, section: bytes, envelope: Envelope, users: Sequence[int], *, submitted: bool
    ) -> SpamVerdict:
        """The verdict on one message for these recipients (local users' ids); see the module docstring."""
        if not self.enabled:
            return SpamVerdict(DELIVER)
        if submitted and not self.cfg.check_submission:
            return SpamVerdict(DELIVER, render(None, "submission"), strip=True)
        users = list(dict.fromkeys(users))
        listing = await store.listing(self.pool, users) if users else []
        # The From field is read only for recipients with lists (most have none: one indexed probe).
        lists = (
            await store.decisions(self.pool, listing, await _senders(section, envelope.mail_from)) if listing else {}
        )
        allowed = {u for u, kind in lists.items() if kind == store.ALLOW}
        blocked = frozenset(u for u, kind in lists.items() if kind == store.BLOCK)
        if blocked and blocked == set(users) and self.cfg.block_action == "refuse":
            return SpamVerdict(REFUSE, reason="sender blocked by every recipient")
        undecided = [u for u in users if u not in lists]
        if users and not undecided:
            return SpamVerdict(DELIVER, render(None, "sender-lists"), blocked, "sender lists", strip=True)
        if message.size > self.cfg.max_size:
            fields = render(None, f"too-big size={message.size} max={self.cfg.max_size}")
            return SpamVerdict(DELIVER, fields, blocked, strip=True)
        try:
            result = await self.rspamd.check(message, envelope)
        except Unreachable as exc:
            self._unreachable(exc)
            if self.cfg.on_unreachable == "tempfail" and not allowed:
                return SpamVerdict(DEFER, reason="rspamd unreachable")
            return SpamVerdict(DELIVER, render(None, "unreachable"), blocked, "rspamd unreachable", strip=True)
        fields = render(result)
        if result.action == "no action":
            return SpamVerdict(DELIVER, fields, blocked, result=result, strip=True)
        reason = f"rspamd {result.action} score={result.score:.2f}"
        if result.action in ("reject", "soft reject", "greylist") and not allowed:
            return SpamVerdict(REFUSE if result.action == "reject" else DEFER, fields, reason=reason, result=result)
        junk = frozenset(u for u in users if u not in allowed)
        if result.action == "rewrite subject" and result.subject is not None and not allowed and not submitted:
            if self.cfg.rewrite_subject_folder == "inbox":
                junk = blocked
            return SpamVerdict(DELIVER, fields, junk, reason, result, strip=True, subject=subject_field(result.subject))
        return SpamVerdict(DELIVER, fields, junk, reason, result, strip=True)

    def _unreachable(self, exc: Unreachable) -> None:
        """One log line per WARN_EVERY seconds while rspamd cannot be reached, counting the messages since."""
        now = time.monotonic()
        self._unwarned += 1
        if now - self._warned_at < WARN_EVERY:
            return
        log.warning(
            "spam-rspamd-unreachable url=%s error=%s messages=%d on_unreachable=%s",
            self.cfg.url,
            exc,
            self._unwarned,
            self.cfg.on_unreachable,
        )
        self._warned_at = now
        self._unwarned = 0


async def _senders(section: bytes, mail_from: str) -> list[str]:
    """The envelope sender and every From address (what the sender lists are matched against)."""
    if len(section) <= HEADER_ON_LOOP:
        found = field_addresses(section, "From")
    else:
        found = await asyncio.to_thread(field_addresses, section, "From")
    return list(dict.fromkeys([a for a in [mail_from, *(found or [])] if a]))


__all__ = ["DEFER", "DELIVER", "JUNK", "REFUSE", "SpamFilter", "SpamVerdict", "read_back", "render", "strip_fields"]
