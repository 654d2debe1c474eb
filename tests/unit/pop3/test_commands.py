"""The POP3 command table agrees with the parser's grammar and with RFC 1939's states."""

from __future__ import annotations

import inspect

from relate.pop3 import commands, parser
from relate.pop3.session import AUTHORIZATION, TRANSACTION, UPDATE


def test_every_verb_of_the_grammar_has_a_handler() -> None:
    """The parser's verbs and the handler table name the same verbs, and each entry names its RFC."""
    assert set(parser.GRAMMAR) == set(commands.COMMANDS)
    for verb, entry in commands.COMMANDS.items():
        assert callable(entry.handler), verb
        assert entry.rfc.startswith("RFC "), verb
        assert entry.states, f"{verb} is allowed in no state"


def test_state_table_follows_rfc_1939() -> None:
    """Login verbs only in AUTHORIZATION, maildrop verbs only in TRANSACTION, CAPA and QUIT in both, none in UPDATE."""
    assert commands.ALLOWED[AUTHORIZATION] == {"CAPA", "STLS", "USER", "PASS", "AUTH", "QUIT"}
    assert commands.ALLOWED[TRANSACTION] == {
        "CAPA", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "NOOP", "RSET", "QUIT",
    }  # fmt: skip
    assert commands.ALLOWED[UPDATE] == frozenset()
    assert set(commands.ALLOWED) == {AUTHORIZATION, TRANSACTION, UPDATE}


def test_handlers_cite_their_rfc_section() -> None:
    """Each handler opens with its RFC reference comment, the one the table gives."""
    for verb, entry in commands.COMMANDS.items():
        comment = inspect.getcomments(entry.handler) or ""
        first = entry.rfc.split(",")[0]
        assert comment.startswith(f"# {first}"), (verb, comment)
        assert f"({verb}" in comment, (verb, comment)
