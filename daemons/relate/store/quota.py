"""Quota (RFC 9208): per-user limits on STORAGE and MESSAGE, usage, and the checks every storing path makes.

What counts: every message in every folder of the user, each copy at its
stored size (``messages.size``, the octets STATUS SIZE adds up), however
many copies share one blob: RFC 9208 §5.1 (STORAGE, the sizes of the
messages) and §5.2 (MESSAGE, their number).

Where usage lives, and why (the design):

- Each mailbox row keeps ``message_count`` and ``message_bytes``. Every
  change of a mailbox's messages already writes that row: ingest and COPY
  take UIDNEXT and HIGHESTMODSEQ from it with one UPDATE that holds the row
  lock until commit, and expunges (every removal path) stamp their modseq
  on it. The counters ride in those same UPDATEs: no extra statement, no
  extra row written, no new lock. A user's usage is the sum over their
  mailboxes, a handful of rows on one index range, read only when a check
  needs it.
- Rejected: a usage row per user, updated by every delivery. Deliveries to
  one mailbox serialise on its row already; a per-user row would serialise
  deliveries to *all* of a user's mailboxes (INBOX, the Sent copy of each
  submission, APPENDs to any folder) behind one lock and add a row write
  per message. Rejected too: a cache reconciled now and then, which is
  wrong by whatever arrives between two runs.

How exact: a check that must hold runs inside the UPDATE that takes the
mailbox row lock (:func:`fits_sql`, used by store.messages.ingest and
store.imap_messages.copy). When that UPDATE waited for another writer of
the same mailbox, PostgreSQL evaluates the condition again on the row as
that writer committed it (READ COMMITTED's re-check), so the mailbox's own
counters are exact; the user's other mailboxes are read as the statement's
snapshot saw them. The only messages a check can miss are those being
stored into the user's *other* mailboxes at that very moment, at most one
per mailbox (a mailbox admits one writer at a time): a user can end above a
limit by the messages in flight into their other folders at that instant
(in practice one, a Sent copy or an APPEND beside a delivery), never by a
stream of deliveries. The checks SMTP and the delivery daemon make before
they parse a message (:func:`verdicts`) read without locks: they decide
what to try and what to answer (SMTP reads the usage with the recipient
lookup it makes anyway, and judges again after DATA from that reading), and
the in-statement check has the last word.

Policy:

- Limits: the user's own (``relatectl user quota``: NULL follows
  ``quota.storage`` / ``quota.messages``, 0 is none), else the configured
  default; 0 means no limit.
- A user is *full* when usage has reached a limit (bytes >= the storage
  limit, or messages >= the message limit): no message fits any more.
- IMAP: APPEND and COPY that would take usage past a limit are refused
  (``NO [OVERQUOTA]``) and store nothing. MOVE (and RENAME of INBOX, the
  API's move) stays within one user, changes no usage and is never
  refused: a full user can always move mail to Trash and expunge it.
- Mail delivered to a user (:func:`judge`): it fits, or it is refused for
  now (SMTP ``452 4.2.2``, the delivery daemon defers it), or for good
  (``552 5.2.2``, the delivery daemon bounces it): for good when the
  message is larger than the storage limit itself, or when the user has
  been full for ``quota.bounce_after_days``.
- Full since: ``users.quota_full_since`` is set when a delivery check first
  finds the user full, and cleared when a check finds room, when the user
  removes mail (any expunge, a folder deleted) and when an admin changes the
  limits; ``quota.bounce_after_days`` counts from it. It is written only
  at those transitions, never per message.
- Stored whatever the quota (and counted): the delivery daemon's DSNs and
  delay warnings (the sender must hear of their mail), drafts saved
  through the API, and a copy SMTP delivers to a user whose quota the
  message would cross when other recipients of the same message have room
  (one SMTP reply covers them all; relate.delivery says why).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from relate.config import QuotaConfig
from relate.store.db import Queryable

# The one quota root (RFC 9208 §3.2) every mailbox of a user belongs to.
ROOT = ""


@dataclass(frozen=True)
class Limits:
    """A user's limits in force: bytes of messages and messages; None means no limit."""

    storage: int | None = None
    messages: int | None = None

    @classmethod
    def of(cls, own_storage: int | None, own_messages: int | None, cfg: QuotaConfig) -> Limits:
        """The limits in force from a user's own columns (NULL: the configured default; 0: none)."""
        storage = cfg.storage if own_storage is None else own_storage
        messages = cfg.messages if own_messages is None else own_messages
        return cls(storage or None, messages or None)

    @property
    def unlimited(self) -> bool:
        return self.storage is None and self.messages is None


@dataclass(frozen=True)
class Usage:
    """What a user stores, against their limits."""

    user_id: int
    storage: int  # bytes
    messages: int
    limits: Limits
    full_since: datetime | None

    @property
    def full(self) -> bool:
        """A limit is reached: no further message fits."""
        lim = self.limits
        return (lim.storage is not None and self.storage >= lim.storage) or (
            lim.messages is not None and self.messages >= lim.messages
        )

    def room_for(self, size: int, count: int = 1) -> bool:
        """Whether ``count`` more messages of ``size`` bytes in all stay within every limit."""
        lim = self.limits
        return (lim.storage is None or self.storage + size <= lim.storage) and (
            lim.messages is None or self.messages + count <= lim.messages
        )


class Verdict(enum.Enum):
    """What becomes of a message for a user, by :func:`judge`."""

    FITS = "fits"
    LATER = "later"  # refused for now: 452 4.2.2, deferred
    NEVER = "never"  # refused for good: 552 5.2.2, bounced


def judge(usage: Usage, size: int, now: datetime, bounce_after: timedelta) -> Verdict:
    """Whether a message of ``size`` bytes (0: not known yet) can be delivered to this user now.

    Never, when it is larger than the storage limit itself or the user has been
    full for ``bounce_after`` (counted from ``full_since``, or from now when it
    is not set yet); later, while the user is full or when this message would
    take them past a limit; else it fits.
    """
    lim = usage.limits
    if lim.storage is not None and size > lim.storage:
        return Verdict.NEVER
    if usage.full:
        since = usage.full_since or now
        return Verdict.NEVER if now - since >= bounce_after else Verdict.LATER
    return Verdict.FITS if usage.room_for(size) else Verdict.LATER


_USAGE = """
SELECT u.id, u.quota_storage, u.quota_messages, u.quota_full_since,
       coalesce(sum(b.message_bytes), 0)::bigint AS bytes, coalesce(sum(b.message_count), 0)::bigint AS messages
  FROM users u LEFT JOIN mailboxes b ON b.user_id = u.id
 WHERE u.id = ANY($1::bigint[]) GROUP BY u.id"""


async def usage(conn: Queryable, user_ids: Sequence[int], cfg: QuotaConfig) -> dict[int, Usage]:
    """Usage and limits of these users (one query); a user that does not exist is left out."""
    rows = await conn.fetch(_USAGE, list(user_ids))
    return {
        r["id"]: Usage(
            r["id"],
            r["bytes"],
            r["messages"],
            Limits.of(r["quota_storage"], r["quota_messages"], cfg),
            r["quota_full_since"],
        )
        for r in rows
    }


def read_usage(user_id: int, row: Mapping[str, Any], cfg: QuotaConfig) -> Usage | None:
    """The Usage in a row that store.accounts.recipient_target made (None when it read none)."""
    used = row.get("used")
    if used is None:
        return None
    limits = Limits.of(row["quota_storage"], row["quota_messages"], cfg)
    return Usage(user_id, used[0], used[1], limits, row["quota_full_since"])


async def verdicts(
    conn: Queryable, sizes: Mapping[int, int], cfg: QuotaConfig, now: datetime
) -> dict[int, tuple[Verdict, Usage]]:
    """:func:`judge` for each user id in ``sizes`` (the message's size for them, 0 when not known yet),
    by their usage now; a user that does not exist is left out. See :func:`settle`."""
    return await settle(conn, await usage(conn, list(sizes), cfg), sizes, cfg, now)


async def settle(
    conn: Queryable, found: Mapping[int, Usage], sizes: Mapping[int, int], cfg: QuotaConfig, now: datetime
) -> dict[int, tuple[Verdict, Usage]]:
    """:func:`judge` for each of ``found`` (usage already read) with its size in ``sizes``.

    Sets ``quota_full_since`` (to ``now``) for users found full without it, and
    clears it for users found with room, in one statement when any changes
    (no statement at all otherwise).
    """
    bounce_after = timedelta(days=cfg.bounce_after_days)
    out = {uid: (judge(u, sizes[uid], now, bounce_after), u) for uid, u in found.items()}
    starting = [u.user_id for u in found.values() if u.full and u.full_since is None]
    ending = [u.user_id for u in found.values() if not u.full and u.full_since is not None]
    if starting or ending:
        await conn.execute(
            """UPDATE users SET quota_full_since = CASE WHEN id = ANY($1::bigint[]) THEN $3::timestamptz END
                WHERE id = ANY($1::bigint[] || $2::bigint[])""",
            starting,
            ending,
            now,
        )
    return out


async def set_limits(conn: Queryable, user_id: int, storage: int | None, messages: int | None) -> None:
    """A user's own limits (None: the configured default; 0: none); the full-since clock starts afresh."""
    await conn.execute(
        "UPDATE users SET quota_storage = $2, quota_messages = $3, quota_full_since = NULL WHERE id = $1",
        user_id,
        storage,
        messages,
    )


def fits_sql(box: str, size: str, count: str, storage_default: str, messages_default: str) -> str:
    """A condition for an UPDATE of the mailbox row ``box``: its owner's usage, plus ``count`` messages
    of ``size`` bytes in all, stays within every limit (``*_default``: the configured defaults).

    ``box``'s own counters are read from the row being updated (so after waiting for its lock, from the
    row as committed), the other mailboxes' from the statement's snapshot: see the module docstring.
    Each sum is in the branch of an OR that only a limit reaches, so a user without limits costs one
    look at their row.
    """

    def within(limit: str, default: str, column: str, added: str) -> str:
        cap = f"coalesce(u.{limit}, {default}::bigint)"
        others = f"(SELECT coalesce(sum(o.{column}), 0) FROM mailboxes o WHERE o.user_id = u.id AND o.id <> {box}.id)"
        return f"({cap} = 0 OR {box}.{column} + {added} + {others} <= {cap})"

    return (
        f"EXISTS (SELECT 1 FROM users u WHERE u.id = {box}.user_id"
        f" AND {within('quota_storage', storage_default, 'message_bytes', size)}"
        f" AND {within('quota_messages', messages_default, 'message_count', count)})"
    )
