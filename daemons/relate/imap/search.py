"""SEARCH (RFC 9051 §6.4.4): narrowed in SQL, decided in Python on the stored columns.

Top-level criteria that SQL can answer exactly (flags, dates, sizes, UIDs,
and BODY/TEXT substrings of messages the indexer has seen) narrow the
candidates in the query; every criterion is then evaluated on each
candidate, so NOT/OR and header searches are exact. String matching is
case-insensitive substring matching on decoded text, UTF-8 throughout.
BODY and TEXT use the text the indexer stored (``store.messages.search_texts``)
and, for a message not indexed yet, the same function on the message itself,
so results never depend on whether the indexer has run.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from relate.imap.errors import No
from relate.imap.parser import SearchKey, SeqSet, Spans
from relate.imap.session import Selected
from relate.mail import encoded_words
from relate.mail.mime import parse_message
from relate.store.db import Queryable
from relate.store.messages import search_texts

_FLAG_KEYS = {
    "ANSWERED": "\\Answered",
    "DELETED": "\\Deleted",
    "DRAFT": "\\Draft",
    "FLAGGED": "\\Flagged",
    "SEEN": "\\Seen",
}


def _has_key(key: SearchKey, names: frozenset[str]) -> bool:
    return key.name in names or any(isinstance(a, SearchKey) and _has_key(a, names) for a in key.args)


def _prefilter(key: SearchKey, sel: Selected, params: list[Any]) -> list[str]:
    """SQL conditions implied by the top-level AND of ``key`` (an over-approximation)."""
    if key.name == "AND":
        out: list[str] = []
        for sub in key.args:
            assert isinstance(sub, SearchKey)
            out += _prefilter(sub, sel, params)
        return out
    name, args = key.name, key.args
    if name in _FLAG_KEYS:
        params.append(_FLAG_KEYS[name])
        return [f"${len(params)} = ANY (m.flags)"]
    if name.startswith("UN") and name[2:] in _FLAG_KEYS:
        params.append(_FLAG_KEYS[name[2:]])
        return [f"NOT (${len(params)} = ANY (m.flags))"]
    if name in ("LARGER", "SMALLER"):
        params.append(args[0])
        return [f"m.size {'>' if name == 'LARGER' else '<'} ${len(params)}"]
    if name == "MODSEQ":
        params.append(args[0])
        return [f"m.modseq >= ${len(params)}"]
    if name in ("BODY", "TEXT"):
        # LIKE with the needle escaped: the trigram indexes answer it (migration 0006; on message_texts since 0032).
        needle = str(args[0]).lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params.append(f"%{needle}%")
        n = len(params)
        found = f"t.body LIKE ${n}"
        if name == "TEXT":
            found = f"({found} OR t.head LIKE ${n})"
        # Messages not indexed yet pass through, to be checked on their own text. One list of candidates
        # (the trigram indexes' and the partial index of those not indexed): an OR over the two tables
        # would scan the mailbox instead.
        return [
            f"""m.id IN (SELECT t.message_id FROM message_texts t WHERE {found}
                         UNION ALL SELECT p.id FROM messages p WHERE NOT p.text_indexed)"""
        ]
    return []


# Rows per query for the columns every key can use; their size does not depend on the messages' sizes.
_BATCH = 2000
# Stored search text and raw bytes (BODY, TEXT, HEADER) are read a group at a time, a group holding at
# most this many octets by the rows' sizes (at least one row), so a SEARCH holds a bounded part of a mailbox.
_TEXT_BYTES = 16 * 1024 * 1024
# The indexer's text of one message is at most twice store.messages._SEARCH_TEXT_LIMIT characters.
_INDEXED_TEXT = 800_000
# Up to this many rows are matched on the event loop; more (or any that need parsing) in a worker thread.
_INLINE_ROWS = 200

_LIGHT = """SELECT m.uid, m.modseq, m.flags, m.internal_date, m.date_header, m.envelope->>'date' AS date_text, m.size,
                   m.subject, m.header_end, m.from_addr, m.to_addr, m.cc_addr, m.bcc_addr, m.text_indexed,
                   m.created_at{extra}
              FROM messages m WHERE {where} AND m.uid > ${after} ORDER BY m.uid LIMIT {batch}"""
_ADDRESS_KEYS = frozenset({"FROM", "TO", "CC", "BCC"})
# With address keys: each field's ENVELOPE addresses too, for the names of groups (RFC 5322 §3.4), which the
# decoded address columns hold only for an empty group.
_ENVELOPE_FIELDS = "".join(f", m.envelope->'{f}' AS envelope_{f}" for f in ("from", "to", "cc", "bcc"))


async def run(
    conn: Queryable,
    sel: Selected,
    key: SearchKey,
    *,
    charset: str | None,
    only: Sequence[int] | None = None,
    modseqs: dict[int, int] | None = None,
) -> list[int]:
    """UIDs of the selected mailbox's messages (of ``only``, when given) that match ``key``, ascending (and,
    into ``modseqs`` if given, each one's modseq as the search saw it: SEARCH MODSEQ's result, RFC 7162 §3.1.5).

    The mailbox is read in UID order, ``_BATCH`` rows at a time; where keys need a message's
    text, that is read in groups of at most ``_TEXT_BYTES``. Matching runs on the loop for a
    small batch and in a worker thread otherwise, so neither memory nor the loop's time grows
    with the mailbox.
    """
    if charset not in (None, "UTF-8", "US-ASCII"):
        raise No("Only UTF-8 searches are supported", "BADCHARSET (UTF-8)")
    params: list[Any] = [sel.mailbox_id]
    where = " AND ".join(["m.mailbox_id = $1", *_prefilter(key, sel, params)])
    if only is not None:
        params.append(list(only))
        where += f" AND m.uid = ANY(${len(params)}::bigint[])"
    extra = _ENVELOPE_FIELDS if _has_key(key, _ADDRESS_KEYS) else ""
    light = _LIGHT.format(where=where, after=len(params) + 1, batch=_BATCH, extra=extra)
    texts = _has_key(key, frozenset({"BODY", "TEXT"}))
    header = _has_key(key, frozenset({"HEADER"}))
    ctx = _Context(sel)
    matched: list[int] = []
    after = 0
    while True:
        rows = [dict(r) for r in await conn.fetch(light, *params, after)]
        if not rows:
            return matched
        after = rows[-1]["uid"]
        first = len(matched)
        if not (texts or header):
            matched += await _evaluate(rows, key, ctx, parse=False)
        else:
            for group in _groups(rows, texts=texts, header=header):
                await _add_text(conn, sel.mailbox_id, group, texts=texts, header=header)
                parse = texts and not all(r["text_indexed"] for r in group)
                matched += await _evaluate(group, key, ctx, parse=parse)
        if modseqs is not None and len(matched) > first:
            found = {r["uid"]: r["modseq"] for r in rows}
            modseqs.update((uid, found[uid]) for uid in matched[first:])


def _weight(row: dict[str, Any], *, texts: bool, header: bool) -> int:
    """Octets that reading ``row``'s text for these keys brings into memory (about)."""
    weight = int(row["header_end"] or 0) if header else 0
    if texts:
        weight += min(int(row["size"]), _INDEXED_TEXT) if row["text_indexed"] else int(row["size"])
    return weight


def _groups(rows: list[dict[str, Any]], *, texts: bool, header: bool) -> list[list[dict[str, Any]]]:
    groups: list[list[dict[str, Any]]] = [[]]
    held = 0
    for row in rows:
        weight = _weight(row, texts=texts, header=header)
        if groups[-1] and held + weight > _TEXT_BYTES:
            groups.append([])
            held = 0
        groups[-1].append(row)
        held += weight
    return groups


async def _add_text(
    conn: Queryable, mailbox_id: int, group: list[dict[str, Any]], *, texts: bool, header: bool
) -> None:
    """Add to each row what its text keys read: the indexer's text, or (HEADER, or not indexed yet) raw bytes."""
    if texts and header:
        raw = "CASE WHEN m.text_indexed THEN substring(b.data from 1 for m.header_end::int) ELSE b.data END"
    elif texts:
        raw = "CASE WHEN m.text_indexed THEN NULL ELSE b.data END"
    else:
        raw = "substring(b.data from 1 for m.header_end::int)"
    stored = ", t.head AS search_head, t.body AS search_body" if texts else ""
    texts_join = "LEFT JOIN message_texts t ON t.message_id = m.id" if texts else ""
    heavy = await conn.fetch(
        f"""SELECT m.uid{stored}, {raw} AS raw FROM messages m JOIN blobs b ON b.hash = m.blob_hash {texts_join}
             WHERE m.mailbox_id = $1 AND m.uid = ANY($2::bigint[])""",
        mailbox_id,
        [r["uid"] for r in group],
    )
    by_uid = {r["uid"]: r for r in heavy}
    for row in group:
        found = by_uid.get(row["uid"])
        row["gone"] = found is None  # expunged since the first query: it matches nothing now
        row["raw"] = None if found is None else found["raw"]
        row["search_head"] = None if found is None or not texts else found["search_head"]
        row["search_body"] = None if found is None or not texts else found["search_body"]


async def _evaluate(rows: list[dict[str, Any]], key: SearchKey, ctx: _Context, *, parse: bool) -> list[int]:
    if len(rows) <= _INLINE_ROWS and not parse:
        return _matching(rows, key, ctx)
    return await asyncio.to_thread(_matching, rows, key, ctx)


def _matching(rows: list[dict[str, Any]], key: SearchKey, ctx: _Context) -> list[int]:
    """The UIDs of ``rows`` that match ``key`` (pure CPU: safe in a worker thread while the session waits)."""
    matched = []
    for row in rows:
        msn = ctx.sel.msn(row["uid"])
        if msn is None or row.get("gone"):
            continue  # arrived after the client's view (it will hear of it first), or expunged meanwhile
        if _Message(row, msn, ctx).matches(key):
            matched.append(row["uid"])
    return matched


class _Context:
    """What every message of one SEARCH is matched against: the client's view, and resolved sequence sets."""

    def __init__(self, sel: Selected) -> None:
        self.sel = sel
        self.count = len(sel.uids)
        self.largest_uid = sel.uids[-1] if sel.uids else 0
        self.saved = frozenset(sel.saved)
        self.now = datetime.now(UTC)  # OLDER and YOUNGER (RFC 5032) count back from one instant per SEARCH
        self._spans: dict[tuple[int, int], Spans] = {}

    def spans(self, seqset: SeqSet, largest: int) -> Spans:
        """``seqset`` resolved once per SEARCH, not once per message."""
        cache_key = (id(seqset), largest)
        found = self._spans.get(cache_key)
        if found is None:
            found = self._spans[cache_key] = seqset.resolve(largest)
        return found


class _Message:
    def __init__(self, row: dict[str, Any], msn: int, ctx: _Context) -> None:
        self.row = row
        self.msn = msn
        self.ctx = ctx
        self._texts: tuple[str, str] | None = None

    def _search_texts(self) -> tuple[str, str]:
        """(header text, body text) as the indexer stores them; computed here for unindexed messages."""
        if self._texts is None:
            if self.row["text_indexed"]:
                self._texts = (self.row["search_head"] or "", self.row["search_body"] or "")
            else:
                raw = bytes(self.row["raw"])
                self._texts = search_texts(raw, parse_message(raw))
        return self._texts

    def _sent_date(self) -> datetime:
        """The Date header's own calendar date, in the sender's time zone (RFC 9051 §6.4.4)."""
        text = self.row["date_text"]
        if text:
            with contextlib.suppress(TypeError, ValueError, IndexError):
                return email.utils.parsedate_to_datetime(text)
        fallback: datetime = self.row["date_header"] or self.row["internal_date"]
        return fallback

    def _header(self) -> str:
        raw = bytes(self.row["raw"])[: int(self.row["header_end"])]
        return raw.decode("utf-8", "replace")

    def _addresses(self, field: str) -> str:
        """The field's addresses as ``name <addr>`` and the names of its groups, lower case, for substring matching."""
        text = " ".join(f"{a.get('name') or ''} <{a.get('email') or ''}>" for a in self.row[f"{field}_addr"])
        # ENVELOPE marks a group's start as (NIL NIL name NIL): a NIL host (RFC 9051 §7.5.2).
        groups = [a[2] for a in self.row[f"envelope_{field}"] or () if a[3] is None and a[2] is not None]
        return " ".join([text, *(encoded_words.decode(g) for g in groups)]).lower()

    def _in(self, seqset: SeqSet, value: int, largest: int) -> bool:
        if seqset.saved:
            return self.row["uid"] in self.ctx.saved
        return value in self.ctx.spans(seqset, largest)

    def matches(self, key: SearchKey) -> bool:
        name, args = key.name, key.args
        flags = self.row["flags"]
        if name == "AND":
            return all(self.matches(k) for k in args if isinstance(k, SearchKey))
        if name == "OR":
            left, right = args
            assert isinstance(left, SearchKey)
            assert isinstance(right, SearchKey)
            return self.matches(left) or self.matches(right)
        if name == "NOT":
            (inner,) = args
            assert isinstance(inner, SearchKey)
            return not self.matches(inner)
        if name == "ALL":
            return True
        # RFC 3501 §6.4.4: \\Recent is the session's own (IMAP4rev2 has none: nothing is recent there).
        if name == "RECENT":
            return self.ctx.sel.is_recent(self.row["uid"])
        if name == "OLD":
            return not self.ctx.sel.is_recent(self.row["uid"])
        if name == "NEW":
            return "\\Seen" not in flags and self.ctx.sel.is_recent(self.row["uid"])
        if name in _FLAG_KEYS:
            return _FLAG_KEYS[name] in flags
        if name.startswith("UN") and name[2:] in _FLAG_KEYS:
            return _FLAG_KEYS[name[2:]] not in flags
        if name == "KEYWORD":
            return str(args[0]) in flags
        if name == "UNKEYWORD":
            return str(args[0]) not in flags
        if name == "LARGER":
            return int(self.row["size"]) > int(str(args[0]))
        if name == "SMALLER":
            return int(self.row["size"]) < int(str(args[0]))
        if name == "MODSEQ":
            return int(self.row["modseq"]) >= int(str(args[0]))
        if name == "SEQ":
            assert isinstance(args[0], SeqSet)
            return self._in(args[0], self.msn, self.ctx.count)
        if name == "UID":
            assert isinstance(args[0], SeqSet)
            return self._in(args[0], self.row["uid"], self.ctx.largest_uid)
        if name in ("BEFORE", "ON", "SINCE"):
            return _compare(name, self.row["internal_date"], args[0])
        if name in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            return _compare(name[4:], self._sent_date(), args[0])
        if name in ("SAVEDBEFORE", "SAVEDON", "SAVEDSINCE"):  # RFC 8514 §4.2: the date it was stored here
            return _compare(name[5:], self.row["created_at"], args[0])
        if name == "SAVEDATESUPPORTED":
            return True  # every mailbox keeps save dates
        if name in ("OLDER", "YOUNGER"):  # RFC 5032 §3: the internal date against now less n seconds
            cutoff = self.ctx.now - timedelta(seconds=int(str(args[0])))
            older: bool = self.row["internal_date"] < cutoff
            return older == (name == "OLDER")
        needle = str(args[-1]).lower() if args else ""
        if name == "SUBJECT":
            return needle in (self.row["subject"] or "").lower()
        if name in _ADDRESS_KEYS:
            return needle in self._addresses(name.lower())
        if name == "HEADER":
            field = str(args[0]).lower()
            for line in _unfold(self._header()):
                head, _, value = line.partition(":")
                if head.strip().lower() == field and needle in value.lower():
                    return True
            return False
        if name == "TEXT":
            head, body = self._search_texts()
            return needle in head or needle in body
        if name == "BODY":
            return needle in self._search_texts()[1]
        raise No(f"Unsupported search key {name}")


def _unfold(header: str) -> list[str]:
    return re.sub(r"\r?\n[ \t]", " ", header).splitlines()


def _compare(how: str, when: datetime, day: object) -> bool:
    assert isinstance(day, datetime)
    value: date = when.date()
    target = day.date()
    if how == "BEFORE":
        return value < target
    if how == "ON":
        return value == target
    return value >= target


def compact(numbers: Sequence[int]) -> str:
    """``1,2,3,5`` -> ``1:3,5``: a sequence set that lists ``numbers`` in their order (``5,3,4`` -> ``5,3:4``,
    as sorted results need, RFC 5267 §3.2)."""
    out: list[str] = []
    start = prev = None
    for n in numbers:
        if start is None:
            start = prev = n
        elif n == (prev or 0) + 1:
            prev = n
        else:
            out.append(f"{start}:{prev}" if start != prev else str(start))
            start = prev = n
    if start is not None:
        out.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(out)
