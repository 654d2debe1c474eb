"""The SMTP command table agrees with the grammar: every verb the parser knows has one entry, and only those."""

from __future__ import annotations

import inspect
import re

from relate.smtp import parser
from relate.smtp.commands import COMMANDS
from relate.smtp.session import State


def test_every_verb_of_the_grammar_has_a_handler() -> None:
    """The table's verbs are exactly the parser's, each with an async handler, its states and an RFC reference."""
    assert set(COMMANDS) == set(parser.VERBS)
    for name, verb in COMMANDS.items():
        assert verb.name == name
        assert inspect.iscoroutinefunction(verb.handler), name
        assert verb.states, name
        assert set(verb.states) <= set(State), name
        assert re.fullmatch(r"RFC \d{4} §\d+(\.\d+)*", verb.rfc), (name, verb.rfc)
        assert verb.roles, name


def test_before_tls_only_the_rfc_3207_set() -> None:
    """On the submission port before STARTTLS only EHLO, HELO, STARTTLS, NOOP and QUIT are allowed."""
    assert {name for name, verb in COMMANDS.items() if verb.before_tls} == {"EHLO", "HELO", "STARTTLS", "NOOP", "QUIT"}


def test_the_transaction_needs_auth_and_auth_is_submission_only() -> None:
    """MAIL, RCPT and DATA need AUTH on submission; AUTH exists on the submission ports only."""
    assert {name for name, verb in COMMANDS.items() if verb.needs_auth} == {"MAIL", "RCPT", "DATA"}
    assert COMMANDS["AUTH"].roles == frozenset({"submission", "submissions"})
    assert all(
        verb.roles == frozenset({"mx", "submission", "submissions"}) for n, verb in COMMANDS.items() if n != "AUTH"
    )


def test_every_handler_opens_with_its_rfc_reference() -> None:
    """Each handler's source is preceded by a '# RFC nnnn §x' comment (the conventions' one format)."""
    for name, verb in COMMANDS.items():
        source, start = inspect.findsource(verb.handler)
        comment = source[start - 1].strip()
        assert re.match(r"# RFC \d{4} §", comment), (name, comment)
