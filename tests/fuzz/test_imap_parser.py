"""The IMAP command parser (relate.imap.parser.parse): whatever the lines and literals, only ParseError comes out.

Inputs are commands as the session hands them over: bytes line pieces with
literals between them. Besides raw bytes, commands are assembled from the
grammar's own tokens (every verb, atoms, strings, numbers, sequence sets,
parentheses, wildcards), which reaches far deeper into each command's parser
than random bytes do.
"""

from __future__ import annotations

import contextlib

from hypothesis import example, given
from hypothesis import strategies as st

from relate.imap import limits
from relate.imap.errors import ParseError
from relate.imap.parser import COMMANDS, MAX_MODSEQ, Append, Command, Literal, Notify, Part, Select, SeqSet, parse

_GRAMMAR = [
    b" ", b"(", b")", b"[", b"]", b"<", b">", b".", b"*", b"%", b"$", b":", b",", b"\\", b'"', b"~", b"+",
    b"INBOX", b'""', b"NIL", b"1", b"0", b"4294967295", b"4294967296", b"1:*", b"1,3:5", b"*:1",
    b"FLAGS", b"+FLAGS.SILENT", b"(\\Seen $Junk)", b"\\Deleted", b"BODY[", b"BODY.PEEK[", b"BINARY[",
    b"HEADER.FIELDS (SUBJECT FROM)", b"TEXT", b"MIME", b"1.2.3", b"<0.100>", b"ENVELOPE", b"ALL", b"FAST",
    b"OR", b"NOT", b"HEADER", b"SINCE 1-Feb-2026", b"BEFORE 31-Feb-2026", b"LARGER", b"CHARSET UTF-8",
    b"RETURN (MIN MAX COUNT ALL SAVE)", b"RETURN (STATUS (MESSAGES))", b"(SUBSCRIBED RECURSIVEMATCH)",
    b'"07-Dec-2026 10:00:00 +9999"', b'" 5-Jan-2026 08:30:00 +0200"', b"UTF8 (", b"&AAA-", b"&AOk-",
    b"\x00", b"\xff", b"\xc3\xa9", b"\r", b"\n", b"{5}", b"PLAIN", b"AGJvYgBrZXk=", b"=",
    b"(CONDSTORE)", b"(QRESYNC (", b"CHANGEDSINCE", b"VANISHED", b"(UNCHANGEDSINCE ", b"MODSEQ",
    b'"/flags/\\\\seen"', b"all", b"priv", b"9223372036854775807", b"9223372036854775808",
    b"CATENATE (", b"TEXT ", b"URL ", b'"/INBOX/;UID=1"', b"SET", b"STATUS", b"NONE", b"(SELECTED ",
    b"(PERSONAL ", b"(MAILBOXES (a b) ", b"(SUBTREE ", b"(MessageNew (UID FLAGS) MessageExpunge FlagChange)",
    b"MailboxName", b"SubscriptionChange", b"DEFLATE", b"PREVIEW", b"(LAZY)", b"SAVEDATE", b"OLDER",
    b"YOUNGER 5", b"SAVEDSINCE 1-Feb-2026", b"SAVEDATESUPPORTED",
]  # fmt: skip
_VERBS = [v.encode() for v in COMMANDS] + [b"UID " + v for v in (b"FETCH", b"SEARCH", b"STORE", b"COPY", b"EXPUNGE")]
_TOKENS = st.sampled_from(_VERBS + _GRAMMAR)
_LINES = st.one_of(st.binary(max_size=120), st.lists(_TOKENS, max_size=30).map(b"".join))
_LITERALS = st.builds(
    lambda data, binary: Literal(data, binary=binary, size=len(data)), st.binary(max_size=80), st.booleans()
)


@st.composite
def commands(draw: st.DrawFn) -> list[Part]:
    """A tag, then line pieces with (sometimes) literals between them, as read_command returns them."""
    tag = draw(st.sampled_from([b"a ", b"A001 ", b"", b"+ ", b"* ", b"x\x00 "]))
    parts: list[Part] = [tag + draw(_LINES)]
    for _ in range(draw(st.integers(0, 3))):
        parts.append(draw(_LITERALS))
        parts.append(draw(_LINES))
    return parts


def _check(parts: list[Part], utf8: bool) -> None:
    try:
        cmd = parse(parts, utf8=utf8)
    except ParseError:
        return
    assert isinstance(cmd, Command)
    first = parts[0]
    assert isinstance(first, bytes)
    assert first.startswith(cmd.tag.encode("utf-8", "replace")) or "\ufffd" in cmd.tag
    if isinstance(cmd, Append):
        # Every message's literals are the command's own; a CATENATE URL is never a literal's octets.
        assert 1 <= len(cmd.messages) <= limits.MAX_APPEND_MESSAGES
        for message in cmd.messages:
            assert message.parts
            assert all(p in parts for p in message.parts if isinstance(p, Literal))
            assert message.catenate or len(message.parts) == 1
    if isinstance(cmd, Notify) and cmd.groups is not None:
        assert 1 <= len(cmd.groups) <= limits.MAX_NOTIFY_GROUPS
        assert sum(g.filter.startswith("SELECTED") for g in cmd.groups) <= 1
    # RFC 7162: mod-sequences fit in 63 bits; known UIDs never use "*" or "$".
    for modseq in (getattr(cmd, "changed_since", None), getattr(cmd, "unchanged_since", None)):
        assert modseq is None or 0 <= modseq <= MAX_MODSEQ
    if isinstance(cmd, Select) and cmd.qresync is not None:
        assert 0 <= cmd.qresync.modseq <= MAX_MODSEQ
        known = cmd.qresync.known_uids
        assert known is None or all(r.start is not None and r.end is not None for r in known.ranges)
    for value in vars(cmd).values():
        if isinstance(value, SeqSet):
            value.resolve(10)  # resolves without error whatever was parsed


@given(commands(), st.booleans())
@example([b'a APPEND INBOX "07-Dec-2026 10:00:00 +9999" ', Literal(b"x", size=1), b""], False)
@example([b'a SELECT "&AAA-"'], False)
@example([b'a SELECT "&AOk-&AOk-"'], False)
@example([b"a SELECT !#$&'+,-.0123456789:;<=>?@^_`|[}"], False)
@example([b'a LIST (imaptest) "" ""'], False)
@example([b'a LIST "" "" RETURN (imaptest)'], False)
@example([b'a LIST "&AGE-" ("&AGE-" x)'], False)
@example([b'a LIST "" "' + b"*%" * 15 + b'x"'], False)
@example([b"a SEARCH " + b"(" * 20000 + b"ALL" + b")" * 20000], False)
@example([b"a SEARCH " + b"NOT " * 15000 + b"ALL"], False)
@example([b"a FETCH 1:4294967295 (BODY[" + b"1." * 40 + b"1])"], False)
@example([b"a UID FETCH 1:4294967295 FLAGS"], True)
@example([b"a STORE 1 +FLAGS (" + b" ".join(b"k%d" % i for i in range(200)) + b")"], False)
@example([b"a ID (" + b" ".join(b'"k%d" "v"' % i for i in range(40)) + b")"], False)
@example([b"a LOGIN ", Literal(b"bob\x00", size=4), b" ", Literal(b"key", size=3), b""], False)
@example([b"a SELECT ", Literal(b"\xff\xfe", size=2), b""], True)
@example([b"a SEARCH SINCE 1-Feb-2026 \xb2"], True)
@example([b"a AUTHENTICATE PLAIN " + b"A" * 10000], False)
@example([b"a SELECT INBOX (QRESYNC (1 99999999999999999999 1:* (1:2 3)))"], False)
@example([b"a SELECT INBOX (QRESYNC (1 2 1:4294967295 (1:4294967295 1:4294967295)) CONDSTORE)"], False)
@example([b"a UID FETCH 1:* FLAGS (CHANGEDSINCE " + b"9" * 5000 + b" VANISHED)"], False)
@example([b"a STORE 1 (UNCHANGEDSINCE 0) +FLAGS.SILENT ()"], False)
@example([b'a SEARCH MODSEQ "/flags/\\\\seen" all ', Literal(b"1", size=1), b""], False)
@example([b"a APPEND INBOX ", Literal(b"x", size=1), b" (\\Seen) ", Literal(b"y", size=1, binary=True), b""], False)
@example([b'a APPEND INBOX CATENATE (URL "/INBOX/;UID=1" TEXT ', Literal(b"z", size=1), b") CATENATE (TEXT "], False)
@example([b"a APPEND INBOX " + b"CATENATE (URL x) " * 200], False)
@example([b"a NOTIFY SET STATUS (SELECTED (MessageNew (UID BODY.PEEK[HEADER]) MessageExpunge)) (PERSONAL NONE)"], False)
@example([b"a NOTIFY SET (SELECTED NONE) (SELECTED-DELAYED NONE)"], False)
@example([b"a NOTIFY SET (MAILBOXES (" + b"x " * 300 + b") (MessageNew))"], False)
@example([b"a FETCH 1 (PREVIEW (LAZY LAZY) SAVEDATE)"], False)
def test_parse_raises_only_parse_error(parts: list[Part], utf8: bool) -> None:
    """Any command, bytes and literals alike, parses or raises ParseError (never another exception)."""
    _check(parts, utf8)


@given(st.lists(st.one_of(st.binary(max_size=200), _LITERALS), max_size=6), st.booleans())
def test_arbitrary_parts_raise_only_parse_error(parts: list[Part], utf8: bool) -> None:
    """Parts in any order (a literal first, two lines in a row, nothing at all) only ever give ParseError."""
    with contextlib.suppress(ParseError):
        parse(parts, utf8=utf8)
