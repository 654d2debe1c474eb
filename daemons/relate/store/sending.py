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

Cost and concurrency. One statement per message, in a transaction of its
own: it adds the message to the user's row of the current hour first (the
row lock that takes makes two hosts counting the same user's messages at
once wait for each other, so they cannot both take the last unit of budget;
other users never wait on it), then reads at most 23 earlier hourly rows,
the user's limits and the recipients' rows of ``sent_recipients``. Over a
limit, the transaction is rolled back: the refused message is not counted.
No row is shared between users. Two messages of one user racing to the same
new address may both count it (the budget errs on the safe side), and a
message counted whose storing then fails (a lost database) stays counted.

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


_WINDOW = "hour > date_trunc('hour', now()) - interval '24 hours'"

# $1 user id, $2 recipient addresses, $3 and $4 the default limits of messages and recipients. Counts the
# message in the current hour's row first: ON CONFLICT DO UPDATE waits for, then adds to, the row as
# another transaction of the same user committed it, so the count it returns is exact, and the row
# stays locked (that user's next message waits) until this transaction ends. The earlier hours' rows
# no longer change. The caller commits, or rolls back when a limit is passed.
_CHARGE = f"""
WITH limits AS (
    SELECT coalesce(send_messages_per_day, $3) AS messages, coalesce(send_recipients_per_day, $4) AS recipients
      FROM users WHERE id = $1),
earlier AS (
    SELECT coalesce(sum(messages), 0)::bigint AS messages, coalesce(sum(new_recipients), 0)::bigint AS recipients
      FROM sending_counts WHERE user_id = $1 AND {_WINDOW} AND hour < date_trunc('hour', now())),
fresh AS (
    SELECT DISTINCT a.address FROM unnest($2::text[]) AS a (address)
     WHERE NOT EXISTS (SELECT 1 FROM sent_recipients s WHERE s.user_id = $1 AND s.address = a.address)),
counted AS (
    INSERT INTO sending_counts AS c (user_id, hour, messages, new_recipients)
    SELECT $1, date_trunc('hour', now()), 1, count(*) FROM fresh
    ON CONFLICT (user_id, hour) DO UPDATE
       SET messages = c.messages + 1, new_recipients = c.new_recipients + excluded.new_recipients
    RETURNING messages, new_recipients),
remember AS (
    INSERT INTO sent_recipients (user_id, address) SELECT $1, address FROM fresh ON CONFLICT DO NOTHING),
pruned AS (
    DELETE FROM sending_counts WHERE user_id = $1 AND hour < now() - interval '2 days'),
cleared AS (
    DELETE FROM sending_limit_hits WHERE user_id = $1)
SELECT l.messages AS messages_limit, l.recipients AS recipients_limit,
       e.messages + c.messages AS messages, e.recipients + c.new_recipients AS recipients,
       (SELECT count(*) FROM fresh) AS fresh
  FROM limits l, earlier e, counted c"""

# A refusal, after the charge was rolled back: True when it is the first since the user's last message that fitted.
_HIT = """INSERT INTO sending_limit_hits (user_id, kind) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true"""


class _Refused(Exception):
    """Rolls the charge back."""


async def charge(pool: asyncpg.Pool, user_id: int, recipients: Sequence[str], defaults: Limits) -> Charge:
    """Count one message of ``user_id`` to ``recipients`` (normalized addresses), or refuse it; see the
    module docstring. ``defaults``: the configured limits. One statement in a transaction of its own."""
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                row = await conn.fetchrow(_CHARGE, user_id, list(recipients), defaults.messages, defaults.recipients)
                limits = Limits(row["messages_limit"], row["recipients_limit"])
                over = None
                if limits.messages and row["messages"] > limits.messages:
                    over = MESSAGES
                elif limits.recipients and row["recipients"] > limits.recipients:
                    over = RECIPIENTS
                if over is not None:
                    raise _Refused
        except _Refused:
            first = bool(await conn.fetchval(_HIT, user_id, over))
        else:
            first = False
    fresh = row["fresh"]
    return Charge(over, first, limits, row["messages"] - 1, row["recipients"] - fresh, fresh)


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
