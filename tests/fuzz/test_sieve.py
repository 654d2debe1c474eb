"""The Sieve parser and interpreter: whatever script and message, a SieveError or a result, never a crash."""

from __future__ import annotations

import asyncio

from hypothesis import example, given
from hypothesis import strategies as st

from relate.sieve import grammar, interpreter
from relate.sieve.errors import SieveError
from relate.sieve.interpreter import Keep, Limits
from relate.sieve.message import Envelope

_TOKENS = st.sampled_from(
    [
        *("require", "if", "elsif", "else", "keep", "discard", "stop", "fileinto", "redirect", "reject"),
        *("ereject", "setflag", "addflag", "removeflag", "set", "vacation", "addheader", "deleteheader"),
        *("address", "header", "envelope", "exists", "size", "allof", "anyof", "not", "true", "false"),
        *("hasflag", "body", "string", "date", "currentdate", "duplicate", "mailboxexists"),
        *(":is", ":contains", ":matches", ":count", ":value", ":comparator", ":over", ":under", ":copy"),
        *(":create", ":flags", ":all", ":localpart", ":domain", ":user", ":detail", ":index", ":last"),
        *(":days", ":seconds", ":raw", ":text", ":content", ":zone", ":originalzone", ":lower", ":length"),
        *('"fileinto"', '"variables"', '"imap4flags"', '"relational"', '"editheader"', '"body"', '"date"'),
        *('"index"', '"subaddress"', '"envelope"', '"reject"', '"duplicate"', '"vacation"', '"copy"'),
        *('"comparator-i;ascii-numeric"', '"i;ascii-numeric"', '"i;octet"', '"gt"', '"eq"', '"year"'),
        *('"subject"', '"from"', '"to"', '"*a?*"', '"${1}"', '"${x}"', '"x"', '"a@b.example"', '"\\\\"'),
        *("[", "]", "(", ")", "{", "}", ",", ";", " ", "\n", "1", "10K", "0", "text:\nx\n..y\n.\n", "#c\n"),
    ]
)
_MESSAGES = st.sampled_from(
    [
        b"",
        b"Subject: hi\r\n\r\nbody",
        b"From: a <a+b@c.example>\r\nTo: x@y.example, z@w.example\r\nDate: Tue, 1 Apr 1997 09:06:31 -0800\r\n"
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n"
        b"--q\r\n\r\ntext\r\n--q--\r\n",
        b"no header at all",
        b"Subject: " + b"a" * 5000 + b"\r\n\r\n",
    ]
)
ENVELOPE = Envelope("a@c.example", "x+d@y.example")
REQUIRE = "require [" + ", ".join(f'"{name}"' for name in sorted(grammar.EXTENSIONS)) + "];\n"


async def _dup(handle: str, value: str) -> bool:
    return len(value) % 2 == 0


def _run(script: grammar.Script, message: bytes) -> interpreter.Result:
    return asyncio.run(interpreter.run(script, message, ENVELOPE, limits=Limits(max_steps=2000), duplicate=_dup))


@given(st.text(max_size=2000))
@example('"\\')
@example("text:")
@example("if " + "not " * 1000 + "true {}")
@example("[" * 1000)
def test_any_text_compiles_or_is_refused(text: str) -> None:
    """Any text is a script or a SieveError with a line and column; nothing else is raised."""
    refused: SieveError | None = None
    try:
        grammar.compile(text)
    except SieveError as exc:
        refused = exc
    if refused is not None:
        assert refused.line >= 1
        assert refused.column >= 1


@given(st.lists(_TOKENS, max_size=80), _MESSAGES)
def test_scripts_of_sieve_tokens_run_to_a_result(tokens: list[str], message: bytes) -> None:
    """Scripts made of Sieve's own words either are refused or run to actions (the implicit keep on error)."""
    text = REQUIRE + " ".join(tokens)
    try:
        script = grammar.compile(text)
    except SieveError:
        return
    result = _run(script, message)
    assert result.actions
    if result.error is not None:
        assert result.actions == [Keep(implicit=True)]


_TESTS = st.sampled_from(
    [
        "true",
        'header :matches "subject" "*a?*"',
        'header :count "ge" :comparator "i;ascii-numeric" "to" "1"',
        'address :detail :is "to" "d"',
        'address :domain :contains ["from", "to"] "example"',
        'envelope :user :matches "to" "*"',
        'exists "date"',
        "size :over 10",
        'body :contains "text"',
        'body :raw :matches "*q*"',
        'date :zone "+0100" "date" "weekday" "2"',
        'currentdate :value "gt" "year" "2000"',
        'hasflag :contains "\\\\Seen"',
        'string :matches "${1}" "*"',
        "duplicate",
        'header :index 1 :last :is "x" "y"',
    ]
)
_ACTIONS = st.sampled_from(
    [
        "keep;",
        "discard;",
        "stop;",
        'fileinto "${1}";',
        'fileinto :copy :flags "\\\\Seen" "Box";',
        'redirect "a@b.example";',
        'redirect :copy "c@d.example";',
        'reject "no";',
        'addflag "\\\\Seen";',
        'removeflag "\\\\Seen";',
        'set :upper "x" "${0}";',
        'vacation :days 2 "away";',
        'addheader "X-A" "${x}";',
        'deleteheader :index 1 "subject";',
        'deleteheader :matches "to" "*";',
    ]
)


@st.composite
def _scripts(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 12))):
        test = draw(_TESTS)
        if draw(st.booleans()):
            test = f"anyof (not {test}, {draw(_TESTS)})"
        body = " ".join(draw(st.lists(_ACTIONS, max_size=4)))
        parts.append(f"if {test} {{ {body} }} else {{ {draw(_ACTIONS)} }}")
    return " ".join(parts)


@given(_scripts(), _MESSAGES)
def test_valid_scripts_run_to_a_result(text: str, message: bytes) -> None:
    """Valid scripts over any of the messages run to actions; a run-time error leaves the implicit keep alone."""
    script = grammar.compile(REQUIRE + text)
    result = _run(script, message)
    assert result.actions
    if result.error is not None:
        assert result.actions == [Keep(implicit=True)]
