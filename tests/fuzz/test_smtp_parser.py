"""The SMTP command parser: whatever line a client sends, a command or ParseError comes out, quickly."""

from __future__ import annotations

import unicodedata

from hypothesis import example, given
from hypothesis import strategies as st

from relate.smtp import parser
from relate.smtp.errors import ParseError

# Every input that once broke something (issue 12), and the corners of the grammar.
SEEDS = [
    b"RCPT TO:<demo@",
    b"MAIL FROM:<",
    b"RCPT TO:<demo@example.test",
    b"MAIL FROM:<a\x00b@x>",
    b"MAIL FROM:<\xff\xfe@x>",
    b"RCPT TO:<postmaster>",
    b"RCPT TO:<postmaster@example.com>",
    b"MAIL FROM:<<>>",
    b"MAIL FROM:<>",
    b"MAIL FROM:<@a,@b:c@d>",
    b"MAIL FROM:<@>",
    b'MAIL FROM:<"a\\"b"@x>',
    b'MAIL FROM:<"unterminated@x>',
    b"MAIL FROM:<a@[1.2.3.4]>",
    b"MAIL FROM:<a@[IPv6:::1]>",
    b"MAIL FROM:<a@[>",
    b"MAIL FROM:<m\xc3\xbcller@b\xc3\xbccher.example> SMTPUTF8",
    b"MAIL FROM:<a@b> SIZE=99999999999999999999999",
    b"MAIL FROM:<a@b> SIZE= BODY",
    b"MAIL FROM:<a@b> =x",
    b"RCPT TO:<a@b> NOTIFY=NEVER ORCPT=rfc822;a@b",
    b"RCPT TO:<bob@example.com>>",
    b"AUTH PLAIN " + b"A" * 500,
    b"AUTH",
    b"EHLO \x00",
    b"EHLO",
    b"\xff\xfe\x00\r\n",
    b"",
    b"\r\n",
    b"MAIL FROM:" + b"<" * 1000,
    b"MAIL FROM:<" + b'"' * 1001 + b">",
    b"RCPT TO:<" + b"a." * 500 + b"b@c>",
    b"RCPT TO:<a@" + b"b" * 300 + b".c>",
    b"MAIL FROM:<a@b>" + b" X=1" * 40,
]

# Characters that matter to the grammar, plus some that must never pass.
_ALPHABET = st.sampled_from(
    [*"<>@:.,;\"\\ =[]-+%!_'/#", "a", "B", "0", "é", "日", "\x00", "\x7f", "\u2028", "\udcff", "\t", "\r"]
)


def _parse(line: bytes) -> parser.Command | int:
    """The command, or the code of the ParseError (any other exception fails the test)."""
    try:
        return parser.parse_command(line)
    except ParseError as exc:
        return exc.reply.code


def _check(line: bytes) -> None:
    command = _parse(line)
    if isinstance(command, int):
        assert command in (500, 501, 553, 555)
        return
    assert command.verb in parser.VERBS
    if isinstance(command, (parser.Mail, parser.Rcpt)) and command.path is not None:
        address = command.path.address
        # What may reach a Return-Path or a lookup: no controls, no line breaks, no undecodable bytes.
        assert not [ch for ch in address if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp")], address
        assert "\r" not in address
        assert "\n" not in address
        # Written back out, the path reads the same.
        again = parser.mailbox_path(address)
        assert (again.local, again.domain) == (command.path.local, command.path.domain)
    if isinstance(command, parser.Mail):
        for extended in (True, False):
            try:
                options = parser.mail_options(command.params, extended=extended, auth_offered=True)
            except ParseError as exc:
                code = exc.reply.code
            else:
                code = 250
                assert options.size is None or options.size >= 0
            assert code in (250, 501, 555)


@given(st.binary(max_size=1200))
@example(SEEDS[0])
@example(SEEDS[1])
@example(SEEDS[2])
@example(SEEDS[3])
@example(SEEDS[4])
@example(SEEDS[5])
@example(SEEDS[6])
@example(SEEDS[7])
@example(SEEDS[8])
@example(SEEDS[9])
@example(SEEDS[10])
@example(SEEDS[11])
@example(SEEDS[12])
@example(SEEDS[13])
@example(SEEDS[14])
@example(SEEDS[15])
@example(SEEDS[16])
@example(SEEDS[17])
@example(SEEDS[18])
@example(SEEDS[19])
@example(SEEDS[20])
@example(SEEDS[21])
@example(SEEDS[22])
@example(SEEDS[23])
@example(SEEDS[24])
@example(SEEDS[25])
@example(SEEDS[26])
@example(SEEDS[27])
@example(SEEDS[28])
@example(SEEDS[29])
@example(SEEDS[30])
@example(SEEDS[31])
@example(SEEDS[32])
@example(SEEDS[33])
def test_any_line_is_a_command_or_a_parse_error(line: bytes) -> None:
    """Any bytes as a command line give a command or ParseError (500/501/553/555), never another exception."""
    _check(line)


@given(
    st.sampled_from([*sorted(parser.VERBS), "mail", "Rcpt", "XYZZY", ""]),
    st.sampled_from(["", " ", " FROM:", " TO:", " FROM: ", " TO:<", " FROM:<"]),
    st.text(_ALPHABET, max_size=200),
)
def test_grammar_shaped_lines_are_a_command_or_a_parse_error(verb: str, keyword: str, rest: str) -> None:
    """Lines made of a verb and the grammar's own characters give a command or ParseError, and safe paths."""
    _check((verb + keyword + rest).encode("utf-8", "surrogateescape"))


@given(st.text(_ALPHABET, min_size=1, max_size=60), st.text(_ALPHABET, min_size=1, max_size=60))
def test_a_parsed_mailbox_is_exactly_what_was_sent(local: str, domain: str) -> None:
    """A path that parses gives back its local part and domain as sent, and one '@' between them outside quotes."""
    text = f"{local}@{domain}"
    try:
        box = parser.mailbox_path(text)
    except ParseError as exc:
        code = exc.reply.code
        box = None
    if box is None:
        assert code == 553
        return
    assert box.address == text or box.routed
    assert box.domain
    assert box.local
