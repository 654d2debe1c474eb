"""RFC 7162 grammar in the parser (SELECT parameters, FETCH and STORE modifiers, SEARCH MODSEQ) and
the pure helpers of relate.imap.condstore (run arithmetic, the MODSEQ a SEARCH reports)."""

from __future__ import annotations

import array

import pytest

from relate.imap import condstore
from relate.imap.errors import ParseError
from relate.imap.parser import MAX_MODSEQ, Fetch, Search, SearchKey, Select, SeqRange, SeqSet, Store, parse
from relate.imap.session import uid_runs


def _one(line: bytes) -> object:
    return parse([line])


def test_select_parameters() -> None:
    """SELECT/EXAMINE take (CONDSTORE) and (QRESYNC (uidvalidity modseq [known-uids] [seq-match-data]))."""
    cmd = _one(b"a EXAMINE INBOX (CONDSTORE)")
    assert isinstance(cmd, Select)
    assert cmd.condstore
    assert cmd.readonly
    assert cmd.qresync is None
    cmd = _one(b"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))")
    assert isinstance(cmd, Select)
    assert cmd.qresync is not None
    assert (cmd.qresync.uidvalidity, cmd.qresync.modseq) == (67890007, 20050715194045000)
    assert cmd.qresync.known_uids == SeqSet((SeqRange(41, 41), SeqRange(43, 211), SeqRange(214, 541)))
    cmd = _one(b"a SELECT INBOX (QRESYNC (1 2 1:9 (1:3 2,4,6)) CONDSTORE)")
    assert isinstance(cmd, Select)
    assert cmd.condstore
    assert cmd.qresync is not None
    assert cmd.qresync.seq_match is not None
    cmd = _one(b"a SELECT INBOX (QRESYNC (1 2 (1:3 2,4,6)))")
    assert isinstance(cmd, Select)
    assert cmd.qresync is not None
    assert cmd.qresync.known_uids is None


@pytest.mark.parametrize(
    "line",
    [
        b"a SELECT INBOX (FOO)",  # RFC 4466: an unknown select parameter is BAD
        b"a SELECT INBOX (CONDSTORE CONDSTORE)",
        b"a SELECT INBOX (QRESYNC (0 1))",  # uidvalidity is nz-number
        b"a SELECT INBOX (QRESYNC (1))",
        b"a SELECT INBOX (QRESYNC (1 2 1:*))",  # known-uids: no "*"
        b"a SELECT INBOX (QRESYNC (1 2 $))",
        b"a SELECT INBOX (QRESYNC (1 2 1:5 (1:2 2:4)))",  # seq-match-data of different sizes
        b"a SELECT INBOX (QRESYNC (1 2 1:5 ))",
        b"a SELECT INBOX (QRESYNC (1 9223372036854775808))",
    ],
)
def test_select_parameters_refused(line: bytes) -> None:
    """Malformed or unknown SELECT parameters are a ParseError (BAD), never something else."""
    with pytest.raises(ParseError):
        _one(line)


def test_fetch_modifiers() -> None:
    """FETCH takes (CHANGEDSINCE n); UID FETCH also (CHANGEDSINCE n VANISHED), in either order."""
    cmd = _one(b"a FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)")
    assert isinstance(cmd, Fetch)
    assert cmd.changed_since == 12345
    assert not cmd.vanished
    cmd = _one(b"a UID FETCH 1:* FLAGS (VANISHED CHANGEDSINCE 7)")
    assert isinstance(cmd, Fetch)
    assert cmd.changed_since == 7
    assert cmd.vanished
    cmd = _one(b"a FETCH 1 ALL (CHANGEDSINCE %d)" % MAX_MODSEQ)
    assert isinstance(cmd, Fetch)
    assert cmd.changed_since == MAX_MODSEQ
    assert len(cmd.atts) == 4


@pytest.mark.parametrize(
    "line",
    [
        b"a FETCH 1 FLAGS ()",
        b"a FETCH 1 FLAGS (CHANGEDSINCE)",
        b"a FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)",
        b"a FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)",  # VANISHED is for UID FETCH only
        b"a UID FETCH 1 FLAGS (VANISHED)",  # and needs CHANGEDSINCE
        b"a FETCH 1 FLAGS (CHANGEDSINCE %d)" % (MAX_MODSEQ + 1),
        b"a FETCH 1 FLAGS (CHANGEDSINCE 99999999999999999999999)",
        b"a FETCH 1 FLAGS (FOO 1)",
    ],
)
def test_fetch_modifiers_refused(line: bytes) -> None:
    """Malformed FETCH modifiers and mod-sequences past 2^63-1 are a ParseError."""
    with pytest.raises(ParseError):
        _one(line)


def test_store_unchangedsince() -> None:
    """STORE seqset (UNCHANGEDSINCE n) flags; 0 is a valid value (it fails for every message)."""
    cmd = _one(b"a UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045) +FLAGS.SILENT (\\Deleted)")
    assert isinstance(cmd, Store)
    assert cmd.unchanged_since == 12121230045
    assert cmd.silent
    assert cmd.mode == "+"
    cmd = _one(b"a STORE 1 (unchangedsince 0) FLAGS \\Seen")
    assert isinstance(cmd, Store)
    assert cmd.unchanged_since == 0
    for bad in (b"a STORE 1 (UNCHANGEDSINCE) +FLAGS x", b"a STORE 1 (FOO 1) +FLAGS x", b"a STORE 1 (UNCHANGEDSINCE 1)"):
        with pytest.raises(ParseError):
            _one(bad)


def _key(line: bytes) -> SearchKey:
    cmd = parse([line])
    assert isinstance(cmd, Search)
    return cmd.key


def test_search_modseq() -> None:
    """SEARCH MODSEQ n, with or without a /flags/ entry name and type; other entries are BAD."""
    key = _key(b'a SEARCH MODSEQ "/flags/\\\\draft" all 620162338 UNSEEN')
    assert key == SearchKey("AND", (SearchKey("MODSEQ", (620162338,)), SearchKey("UNSEEN")))
    assert condstore.uses_modseq(key)
    assert condstore.uses_modseq(_key(b"a SEARCH OR NOT MODSEQ 0 SEEN"))
    assert not condstore.uses_modseq(_key(b"a SEARCH UNSEEN"))
    for bad in (b'a SEARCH MODSEQ "/x" all 1', b'a SEARCH MODSEQ "/flags/\\\\seen" mine 1', b"a SEARCH MODSEQ x"):
        with pytest.raises(ParseError):
            parse([bad])


def test_runs_and_intersections() -> None:
    """UIDs become runs; runs intersect and lose the UIDs a session still shows, in linear time."""
    assert uid_runs([1, 2, 3, 7, 9, 10]) == [(1, 3), (7, 7), (9, 10)]
    assert condstore._intersect([(1, 10), (20, 30)], [(5, 25)]) == [(5, 10), (20, 25)]
    assert condstore._intersect([(1, 3)], []) == []
    shown = array.array("Q", [2, 5, 6, 40])
    assert condstore._without([(1, 6), (8, 9), (40, 40)], shown) == [(1, 1), (3, 4), (8, 9)]


def test_search_modseq_result() -> None:
    """The MODSEQ of a SEARCH: the highest of what it returns; of MIN and/or MAX alone when only they are asked."""
    modseqs = {1: 5, 2: 9, 3: 7}
    uids = [1, 2, 3]
    assert condstore.search_modseq(None, uids, modseqs) == 9
    assert condstore.search_modseq({"MIN"}, uids, modseqs) == 5
    assert condstore.search_modseq({"MAX"}, uids, modseqs) == 7
    assert condstore.search_modseq({"MIN", "MAX"}, [1, 3], modseqs) == 7
    assert condstore.search_modseq({"COUNT"}, uids, modseqs) == 9
    assert condstore.search_modseq({"ALL"}, [], modseqs) is None
