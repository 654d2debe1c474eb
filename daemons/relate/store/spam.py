"""The spam filter's tables: per-user sender lists (allow, block) and the learning queue.

Sender lists: an entry is an address (``alice@example.org``) or a domain
(``example.org``, covering its subdomains too), stored in lower case. Whose
lists name a sender is one indexed lookup per message: every pattern a
sender can match (the address, its domain and each parent domain) is asked
for at once.

Learning queue (migration 0025): :func:`note_moves` runs inside the copy or
move's own transaction (relate.store.imap_messages.copy), so a move and the
wish to learn from it commit together; :func:`claim` takes due rows with
``FOR UPDATE SKIP LOCKED`` so any number of SMTP daemons share the work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from relate.errors import Invalid
from relate.mail.address import normalize_domain
from relate.store.db import Queryable

ALLOW = "allow"
BLOCK = "block"
KINDS = (ALLOW, BLOCK)
# Learning that fails is tried again after this many seconds times the attempts made so far.
RETRY_STEP = 30.0


@dataclass(frozen=True)
class SenderRule:
    id: int
    pattern: str
    kind: str
    created_at: datetime


def patterns_for(address: str) -> list[str]:
    """What an entry may say to match ``address``: the address, its domain, and each parent domain."""
    address = address.strip().lower().rstrip(".")
    if not address:
        return []
    if not address.isascii():  # entries hold A-labels: an SMTPUTF8 sender may name the domain as U-labels
        local, at, domain = address.rpartition("@")
        with contextlib.suppress(Invalid):
            address = f"{local}{at}{normalize_domain(domain)}"
    domain = address.rpartition("@")[2]
    labels = domain.split(".")
    out = [address] if "@" in address else []
    out += [".".join(labels[i:]) for i in range(len(labels) - 1)]  # never a bare top-level domain
    return list(dict.fromkeys(p for p in out if p))


async def rules(conn: Queryable, user_id: int) -> list[SenderRule]:
    """A user's entries, allow before block, each in pattern order."""
    rows = await conn.fetch(
        "SELECT id, pattern, kind, created_at FROM sender_rules WHERE user_id = $1 ORDER BY kind, pattern", user_id
    )
    return [SenderRule(r["id"], r["pattern"], r["kind"], r["created_at"]) for r in rows]


async def set_rule(conn: Queryable, user_id: int, pattern: str, kind: str) -> SenderRule:
    """Put ``pattern`` on the user's ``kind`` list (moving it off the other one); the entry."""
    row = await conn.fetchrow(
        """INSERT INTO sender_rules (user_id, pattern, kind) VALUES ($1, $2, $3)
           ON CONFLICT (user_id, pattern) DO UPDATE SET kind = EXCLUDED.kind
           RETURNING id, pattern, kind, created_at""",
        user_id,
        pattern,
        kind,
    )
    assert row is not None
    return SenderRule(row["id"], row["pattern"], row["kind"], row["created_at"])


async def delete_rule(conn: Queryable, user_id: int, *, rule_id: int | None = None, pattern: str | None = None) -> bool:
    """Remove one of the user's entries, by id or by pattern; whether there was one."""
    if rule_id is not None:
        done = await conn.execute("DELETE FROM sender_rules WHERE user_id = $1 AND id = $2", user_id, rule_id)
    else:
        done = await conn.execute("DELETE FROM sender_rules WHERE user_id = $1 AND pattern = $2", user_id, pattern)
    return str(done).endswith(" 1")


async def listing(conn: Queryable, user_ids: Sequence[int]) -> list[int]:
    """Which of these users have any entry at all (one probe of the (user_id, pattern) index)."""
    rows = await conn.fetch(
        """SELECT u.id FROM unnest($1::bigint[]) AS u(id)
            WHERE EXISTS (SELECT 1 FROM sender_rules r WHERE r.user_id = u.id)""",
        list(user_ids),
    )
    return [r["id"] for r in rows]


async def decisions(conn: Queryable, user_ids: Sequence[int], senders: Iterable[str]) -> dict[int, str]:
    """What each user's lists say of these senders: ``block`` when any entry blocks one of them, else
    ``allow`` when any entry allows one; users whose lists name none are left out."""
    patterns = list(dict.fromkeys(p for s in senders for p in patterns_for(s)))
    if not user_ids or not patterns:
        return {}
    rows = await conn.fetch(
        """SELECT user_id, bool_or(kind = 'block') AS blocked FROM sender_rules
            WHERE user_id = ANY($1::bigint[]) AND pattern = ANY($2::text[]) GROUP BY user_id""",
        list(user_ids),
        patterns,
    )
    return {r["user_id"]: BLOCK if r["blocked"] else ALLOW for r in rows}


# -- learning ----------------------------------------------------------------------------

JUNK = "\\Junk"  # the special use (RFC 6154) of the mailbox whose border teaches rspamd

# One statement, whatever the mailboxes: rows only when the move crosses Junk's border. Into Junk from
# anywhere: spam; out of Junk into anything but Trash: ham (deleting spam teaches nothing).
_NOTE = """
INSERT INTO spam_learning (user_id, blob_hash, wanted)
SELECT DISTINCT t.user_id, m.blob_hash, CASE WHEN t.special_use = '\\Junk' THEN 'spam' ELSE 'ham' END
  FROM mailboxes s JOIN mailboxes t ON t.id = $2
  JOIN messages m ON m.mailbox_id = s.id AND m.uid = ANY($3::bigint[])
 WHERE s.id = $1
   AND ((t.special_use = '\\Junk' AND s.special_use IS DISTINCT FROM '\\Junk')
     OR (s.special_use = '\\Junk' AND t.special_use IS DISTINCT FROM '\\Junk'
         AND t.special_use IS DISTINCT FROM '\\Trash'))
ON CONFLICT (user_id, blob_hash) DO UPDATE
   SET wanted = EXCLUDED.wanted, attempts = 0, last_error = NULL, updated_at = now(),
       due = CASE WHEN spam_learning.learnt IS DISTINCT FROM EXCLUDED.wanted THEN now() END
"""


async def note_moves(conn: Queryable, source_id: int, target_id: int, uids: Sequence[int]) -> None:
    """Queue what a copy or move of ``uids`` from ``source_id`` to ``target_id`` teaches (see _NOTE); call it
    in the copy's transaction, before a move removes the source messages, when either mailbox is Junk (no
    other copy teaches anything, and it spares the statement)."""
    await conn.execute(_NOTE, source_id, target_id, list(uids))


@dataclass(frozen=True)
class Lesson:
    user_id: int
    blob_hash: bytes
    wanted: str  # spam or ham
    attempts: int


async def claim(conn: Queryable, limit: int, lease: float) -> list[Lesson]:
    """Up to ``limit`` due rows, each put out of everyone else's reach for ``lease`` seconds (the learn
    call's time): no transaction stays open while rspamd is asked."""
    rows = await conn.fetch(
        """UPDATE spam_learning l SET due = now() + make_interval(secs => $2)
             FROM (SELECT user_id, blob_hash FROM spam_learning
                    WHERE due IS NOT NULL AND due <= now()
                    ORDER BY due LIMIT $1 FOR UPDATE SKIP LOCKED) d
            WHERE l.user_id = d.user_id AND l.blob_hash = d.blob_hash
        RETURNING l.user_id, l.blob_hash, l.wanted, l.attempts""",
        limit,
        lease,
    )
    return [Lesson(r["user_id"], bytes(r["blob_hash"]), r["wanted"], r["attempts"]) for r in rows]


async def message(conn: Queryable, lesson: Lesson, limit: int) -> tuple[bytes | None, int | None]:
    """(the message's bytes, unless it is larger than ``limit``; its size); (None, None) when it is gone
    (its blob swept after every copy was removed)."""
    row = await conn.fetchrow(
        "SELECT size, CASE WHEN size <= $2 THEN data END AS data FROM blobs WHERE hash = $1", lesson.blob_hash, limit
    )
    if row is None:
        return None, None
    return (None if row["data"] is None else bytes(row["data"])), row["size"]


async def learnt(conn: Queryable, lesson: Lesson) -> None:
    """rspamd has learnt it (or knew it already): nothing more to do until it is moved back."""
    await conn.execute(
        """UPDATE spam_learning SET learnt = wanted, due = NULL, last_error = NULL, updated_at = now()
            WHERE user_id = $1 AND blob_hash = $2 AND wanted = $3""",
        lesson.user_id,
        lesson.blob_hash,
        lesson.wanted,
    )


async def failed(conn: Queryable, lesson: Lesson, error: str, *, attempts: int) -> bool:
    """A learn call failed: tried again later, or given up once ``attempts`` calls failed; whether it was
    given up."""
    tries = lesson.attempts + 1
    give_up = tries >= attempts
    await conn.execute(
        """UPDATE spam_learning SET attempts = $3, last_error = $4, updated_at = now(),
                  due = CASE WHEN $5 THEN NULL ELSE now() + make_interval(secs => $6) END
            WHERE user_id = $1 AND blob_hash = $2""",
        lesson.user_id,
        lesson.blob_hash,
        tries,
        error[:500],
        give_up,
        RETRY_STEP * tries,
    )
    return give_up
