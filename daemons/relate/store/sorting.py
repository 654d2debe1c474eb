"""SQL for SORT and THREAD (RFC 5256, RFC 5957): a mailbox ordered by PostgreSQL, and what threading reads.

SORT runs in the database: each criterion is a column or expression (the
string keys are stored at ingest, see migration 0018 and
``relate.mail.sortkeys``), compared with the "C" collation since the keys are
casemapped already, and ties fall to the UID, which orders like the message
number (RFC 5256 §3: "sorted in the order of their sequence numbers"). The
answer is one array of UIDs, so a mailbox of any size costs one round trip
and one decoded array, never a row object per message.

Rows stored before migration 0018 have no keys yet; :func:`fill_keys` derives
them, a batch at a time and in a worker thread, the first time such a
mailbox is sorted or threaded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from relate.mail.sortkeys import display_key, mailbox_key, subject_key
from relate.mail.threadids import thread_ids
from relate.store.db import Queryable

# SORT criteria (RFC 5256 §3, RFC 5957 §2) as SQL over messages m.
_CRITERIA = {
    "ARRIVAL": "m.internal_date",
    "DATE": "coalesce(m.date_header, m.internal_date)",  # RFC 5256 §2.2: INTERNALDATE when Date is unusable
    "SIZE": "m.size",
    "SUBJECT": 'm.sort_subject COLLATE "C"',
    "FROM": 'm.sort_from COLLATE "C"',
    "TO": 'm.sort_to COLLATE "C"',
    "CC": 'm.sort_cc COLLATE "C"',
    "DISPLAYFROM": 'm.sort_display_from COLLATE "C"',
    "DISPLAYTO": 'm.sort_display_to COLLATE "C"',
}
CRITERIA = frozenset(_CRITERIA)

# Rows whose keys fill_keys derives per round trip.
_FILL_BATCH = 1000

_Pending = tuple[int, str | None, str | None, str | None, str | None, str | None, str | None, list[str] | None]


def _keys_of(rows: list[_Pending]) -> list[tuple[Any, ...]]:
    """The keys of each pending row (id, subject, From, To, Cc as ENVELOPE JSON, Message-ID, In-Reply-To,
    References), as ingest derives them: pure CPU."""
    out: list[tuple[Any, ...]] = []
    for row_id, subject, from_, to, cc, message_id, in_reply_to, references in rows:
        first_from, first_to = json.loads(from_ or "null"), json.loads(to or "null")
        out.append(
            (
                row_id,
                subject_key(subject),
                mailbox_key(first_from),
                mailbox_key(first_to),
                mailbox_key(json.loads(cc or "null")),
                display_key(first_from),
                display_key(first_to),
                # text[][] must be rectangular: each row's ids go as one string, split again in SQL.
                "\n".join(thread_ids(message_id, in_reply_to, references or ())),
            )
        )
    # PostgreSQL text holds no NUL; a display name's encoded words can decode to one.
    return [tuple(v.replace("\x00", "") if isinstance(v, str) else v for v in row) for row in out]


async def fill_keys(conn: Queryable, mailbox_id: int) -> int:
    """Derive the keys a mailbox's older rows lack, with the functions ingest uses; how many it filled.

    Costs one index probe when none lacks them. Two sessions filling one mailbox at once write the
    same values; the second skips what the first did.
    """
    filled = 0
    while True:
        rows = await conn.fetch(
            """SELECT m.id, m.subject, (m.envelope -> 'from')::text, (m.envelope -> 'to')::text,
                      (m.envelope -> 'cc')::text, m.message_id, m.in_reply_to, m."references"
                 FROM messages m WHERE m.mailbox_id = $1 AND m.sort_subject IS NULL LIMIT $2""",
            mailbox_id,
            _FILL_BATCH,
        )
        if not rows:
            return filled
        keys = await asyncio.to_thread(_keys_of, [tuple(r) for r in rows])
        await conn.execute(
            """UPDATE messages m SET sort_subject = k.subject, sort_from = k.from_, sort_to = k.to_,
                      sort_cc = k.cc, sort_display_from = k.dfrom, sort_display_to = k.dto,
                      thread_ids = CASE WHEN k.ids = '' THEN ARRAY[''] ELSE string_to_array(k.ids, E'\\n') END
                 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                             $7::text[], $8::text[]) AS k (id, subject, from_, to_, cc, dfrom, dto, ids)
                WHERE m.id = k.id AND m.sort_subject IS NULL""",
            *(list(column) for column in zip(*keys, strict=True)),
        )
        filled += len(rows)


def order_by(program: Sequence[tuple[str, bool]]) -> str:
    """The ORDER BY list of a sort program ((criterion, reverse) pairs), the UID last."""
    terms = [f"{_CRITERIA[key]}{' DESC' if reverse else ''}" for key, reverse in program]
    return ", ".join([*terms, "m.uid"])


def _where(only: Sequence[int] | None) -> tuple[str, list[Any]]:
    """The messages of mailbox $1, or of those UIDs ($2) of it."""
    if only is None:
        return "m.mailbox_id = $1", []
    return "m.mailbox_id = $1 AND m.uid = ANY($2::bigint[])", [list(only)]


async def sorted_uids(
    conn: Queryable, mailbox_id: int, program: Sequence[tuple[str, bool]], only: Sequence[int] | None = None
) -> list[int]:
    """The UIDs of a mailbox (of ``only``, when given) in the order of ``program``."""
    where, args = _where(only)
    found = await conn.fetchval(
        f"SELECT coalesce(array_agg(m.uid ORDER BY {order_by(program)}), '{{}}') FROM messages m WHERE {where}",
        mailbox_id,
        *args,
    )
    return list(found)


async def subject_order(
    conn: Queryable, mailbox_id: int, only: Sequence[int] | None
) -> tuple[list[int], list[float], list[int]]:
    """THREAD=ORDEREDSUBJECT's order (base subject, sent date, UID): (UIDs, sent dates, subject group numbers).

    Consecutive messages with equal group numbers share a base subject.
    """
    where, args = _where(only)
    row = await conn.fetchrow(
        f"""SELECT coalesce(array_agg(uid ORDER BY subject, sent, uid), '{{}}'),
                   coalesce(array_agg(sent ORDER BY subject, sent, uid), '{{}}'),
                   coalesce(array_agg(grp ORDER BY subject, sent, uid), '{{}}')
              FROM (SELECT m.uid, m.sort_subject COLLATE "C" AS subject,
                           extract(epoch FROM coalesce(m.date_header, m.internal_date))::float8 AS sent,
                           dense_rank() OVER (ORDER BY m.sort_subject COLLATE "C") AS grp
                      FROM messages m WHERE {where}) AS s""",
        mailbox_id,
        *args,
    )
    return list(row[0]), list(row[1]), list(row[2])


# Rows per query when threading reads a mailbox.
_THREAD_BATCH = 2000

# One message as threading reads it: UID, sent date (RFC 5256 §2.2) as a POSIX timestamp, and its
# thread_ids (own msg-id or "", then its references).
ThreadRow = tuple[int, float, list[str]]


async def thread_rows(conn: Queryable, mailbox_id: int, only: Sequence[int] | None) -> AsyncIterator[list[ThreadRow]]:
    """What threading needs of a mailbox's messages (of ``only``, when given), in UID order, a batch at a time."""
    where, args = _where(only)
    query = f"""SELECT m.uid, extract(epoch FROM coalesce(m.date_header, m.internal_date))::float8,
                       coalesce(m.thread_ids, '{{""}}')
                  FROM messages m WHERE {where} AND m.uid > ${len(args) + 2}
                 ORDER BY m.uid LIMIT {_THREAD_BATCH}"""
    after = 0
    while True:
        rows = await conn.fetch(query, mailbox_id, *args, after)
        if not rows:
            return
        yield [(r[0], r[1], r[2]) for r in rows]
        after = rows[-1][0]


async def subjects(conn: Queryable, mailbox_id: int, uids: Sequence[int]) -> dict[int, str | None]:
    """The decoded subjects of some messages, by UID."""
    rows = await conn.fetch(
        "SELECT m.uid, m.subject FROM messages m WHERE m.mailbox_id = $1 AND m.uid = ANY($2::bigint[])",
        mailbox_id,
        list(uids),
    )
    return {r[0]: r[1] for r in rows}
