"""Per-user sending limits: messages and first-time recipients in the last 24 hours (migration 0027).

Policy. A leaked key must not turn the host into a spam source, so every
message a user sends (SMTP submission, the REST send path) is counted before
it is stored, and refused while either budget is spent:

- ``messages``: messages sent in the last 24 hours, whatever their number of
  recipients (``submission.limits.messages_per_day``);
- ``recipients``: first-time recipients in the last 24 hours: addresses the
  user had never sent to before (``submission.limits.recipients_per_day``).
  Writing again to people one writes to costs nothing; a spammer's list is
  all first-time recipients.

Each user's own limit (``users.send_*_per_day``, set by ``relatectl user
limits``) wins over the configured default; 0 is no limit. A message that
would take either count over its limit is refused whole (451 4.7.0; the REST
path 429) and not counted. The window slides by the hour: counts are kept
per (user, hour), so "the last 24 hours" is the current hour and the 23
before it, by the database's clock, which every host shares.

Cost and concurrency. One transaction of two statements per message: the
first takes a transaction-scoped advisory lock keyed by the user (so two
hosts counting the same user's messages at once cannot both take the last
unit of budget; other users never wait on it) and reads the user's limits;
the second reads at most 24 hourly rows and the recipients' rows of
``sent_recipients``, and writes the counts. No row is shared between users.
A message counted whose storing then fails (a lost database) stays counted:
the budget errs on the safe side.

Logging once. The first refusal of a user by a limit records it in
``sending_limit_hits`` and tells the caller so (:attr:`Charge.first`), which
logs it; later refusals do not, until a message of the user fits again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from relate.config import SendingLimitsConfig
from relate.store.db import Queryable

LOCK_CLASS = 0x53454E44  # "SEND": the first key of every user's sending-limit lock

MESSAGES = "messages"
RECIPIENTS = "recipients"


@dataclass(frozen=True)
class Limits:
    """Limits in force for one user (0: no limit)."""

    messages: int
    recipients: int

    @classmethod
    def of(cls, cfg: SendingLimitsConfig) -> Limits:
        """The configured defaults."""
        return cls(cfg.messages_per_day, cfg.recipients_per_day)


@dataclass(frozen=True)
class Charge:
    """What counting one message did."""

    over: str | None  # None: counted; else MESSAGES or RECIPIENTS, the limit that refused it
    first: bool  # the first refusal by that limit since the user's last message that fitted (log it)
    limits: Limits
    messages: int  # the user's counts in the window, before this message
    recipients: int
    new_recipients: int  # first-time recipients of this message

    @property
    def summary(self) -> str:
        """``limit=messages used=1000/1000``: the refusal, for a log line."""
        if self.over == MESSAGES:
            return f"limit={self.over} used={self.messages}/{self.limits.messages}"
        return f"limit={self.over} used={self.recipients}+{self.new_recipients}/{self.limits.recipients}"


# $1 user id, $2 default messages limit, $3 default recipients limit.
_LOCK = f"""SELECT pg_advisory_xact_lock({LOCK_CLASS}, ($1 % 2147483648)::int),
                   coalesce(send_messages_per_day, $2) AS messages,
                   coalesce(send_recipients_per_day, $3) AS recipients
              FROM users WHERE id = $1"""

_WINDOW = "hour > date_trunc('hour', now()) - interval '24 hours'"

# $1 user id, $2 recipient addresses, $3 messages limit, $4 recipients limit (0: none).
_CHARGE = f"""
WITH used AS (
    SELECT coalesce(sum(messages), 0)::bigint AS messages, coalesce(sum(new_recipients), 0)::bigint AS recipients
      FROM sending_counts WHERE user_id = $1 AND {_WINDOW}),
fresh AS (
    SELECT DISTINCT a.address FROM unnest($2::text[]) AS a (address)
     WHERE NOT EXISTS (SELECT 1 FROM sent_recipients s WHERE s.user_id = $1 AND s.address = a.address)),
verdict AS (
    SELECT u.messages, u.recipients, f.n AS fresh,
           CASE WHEN $3 > 0 AND u.messages + 1 > $3 THEN 'messages'
                WHEN $4 > 0 AND u.recipients + f.n > $4 THEN 'recipients' END AS over
      FROM used u, (SELECT count(*) AS n FROM fresh) f),
remember AS (
    INSERT INTO sent_recipients (user_id, address)
    SELECT $1, address FROM fresh WHERE (SELECT over FROM verdict) IS NULL
    ON CONFLICT DO NOTHING),
counted AS (
    INSERT INTO sending_counts AS c (user_id, hour, messages, new_recipients)
    SELECT $1, date_trunc('hour', now()), 1, fresh FROM verdict WHERE over IS NULL
    ON CONFLICT (user_id, hour) DO UPDATE
       SET messages = c.messages + 1, new_recipients = c.new_recipients + excluded.new_recipients),
pruned AS (
    DELETE FROM sending_counts
     WHERE user_id = $1 AND hour < now() - interval '2 days' AND (SELECT over FROM verdict) IS NULL),
cleared AS (
    DELETE FROM sending_limit_hits WHERE user_id = $1 AND (SELECT over FROM verdict) IS NULL),
hit AS (
    INSERT INTO sending_limit_hits (user_id, kind)
    SELECT $1, over FROM verdict WHERE over IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING 1)
SELECT v.messages, v.recipients, v.fresh, v.over, EXISTS (SELECT 1 FROM hit) AS first FROM verdict v"""


async def charge(pool: asyncpg.Pool, user_id: int, recipients: Sequence[str], defaults: Limits) -> Charge:
    """Count one message of ``user_id`` to ``recipients`` (normalized addresses), or refuse it; see the
    module docstring. ``defaults``: the configured limits."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_LOCK, user_id, defaults.messages, defaults.recipients)
        limits = Limits(row["messages"], row["recipients"]) if row is not None else defaults
        found = await conn.fetchrow(_CHARGE, user_id, list(recipients), limits.messages, limits.recipients)
    return Charge(found["over"], found["first"], limits, found["messages"], found["recipients"], found["fresh"])


async def usage(conn: Queryable, user_id: int) -> tuple[int, int]:
    """(messages, first-time recipients) of a user in the window now."""
    row = await conn.fetchrow(
        f"""SELECT coalesce(sum(messages), 0)::bigint AS messages, coalesce(sum(new_recipients), 0)::bigint AS rcpts
              FROM sending_counts WHERE user_id = $1 AND {_WINDOW}""",
        user_id,
    )
    return row["messages"], row["rcpts"]


async def own_limits(conn: Queryable, user_id: int, *, lock: bool = False) -> tuple[int | None, int | None] | None:
    """A user's own limits (None: the configured default), or None when there is no such user; ``lock``:
    the row is locked until the transaction ends (to change them)."""
    row = await conn.fetchrow(
        "SELECT send_messages_per_day, send_recipients_per_day FROM users WHERE id = $1"
        + (" FOR NO KEY UPDATE" if lock else ""),
        user_id,
    )
    return None if row is None else (row["send_messages_per_day"], row["send_recipients_per_day"])


async def set_limits(conn: Queryable, user_id: int, messages: int | None, recipients: int | None) -> None:
    """Set a user's own limits (None: follow the configured default; 0: no limit)."""
    await conn.execute(
        "UPDATE users SET send_messages_per_day = $2, send_recipients_per_day = $3 WHERE id = $1",
        user_id,
        messages,
        recipients,
    )
