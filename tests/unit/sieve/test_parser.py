"""The Sieve grammar and its checks (RFC 5228 §8, §2.10.5, §3.2): what a script author is told."""

from __future__ import annotations

import contextlib
import time

import pytest

from relate.sieve import grammar, parser
from relate.sieve.errors import SieveError


def _error(text: str) -> SieveError:
    with pytest.raises(SieveError) as caught:
        grammar.compile(text)
    return caught.value


def test_tokens_of_every_kind_are_read() -> None:
    """Identifiers, tags, numbers with K/M/G, quoted strings with escapes, lists and comments all parse."""
    script = grammar.compile(
        'require ["fileinto"]; # comment\n'
        "/* a block\n comment */\n"
        'if size :over 1K { fileinto "a\\"b\\\\c\\d"; }\n'
        "if size :under 2m { discard; }\n"
        "if size :over 3G { stop; }\n"
    )
    first, second, third = script.commands
    assert first.tests[0].args == (1024,)
    assert first.block is not None
    assert first.block[0].args == ('a"b\\cd',)
    assert second.tests[0].args == (2 * 1024 * 1024,)
    assert third.tests[0].args == (3 * 1024**3,)
    assert script.extensions == {"fileinto"}


def test_multiline_strings_are_dot_unstuffed_with_crlf_line_ends() -> None:
    """text: ... . gives its lines with CRLF; a line starting '..' loses one dot; a hash comment may follow text:."""
    commands = parser.parse("reject text: # why\nline one\n..dotted\n.\n;\n")
    assert commands[0].args[0] == parser.Strings(("line one\r\n.dotted\r\n",), False)


def test_errors_name_line_and_column() -> None:
    """A fault is reported with its 1-based line and column and what was expected."""
    err = _error('require "fileinto";\nif true {\n  fileinto "x"\n}\n')
    assert (err.line, err.column) == (4, 1)
    assert 'expected ";"' in str(err)
    assert "line 4, column 1" in str(err)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('require "nosuch";', 'extension "nosuch" is not supported'),
        ('fileinto "x";', 'needs require "fileinto"'),
        ('keep :flags "\\\\Seen";', 'needs require "imap4flags"'),
        ('if header :is :contains "a" "b" { }', '":contains" with ":is"'),
        ('if header :is :is "a" "b" { }', '":is" given twice'),
        ('if header "a" { }', "expects"),
        ("if size 10 { }", "needs one of :over, :under"),
        ('keep; require "fileinto";', '"require" must come before'),
        ("else { }", '"else" without "if"'),
        ('if header :comparator "i;nosuch" "a" "b" { }', 'comparator "i;nosuch" is not supported'),
        ('if header :comparator "i;ascii-numeric" "a" "b" { }', 'needs require "comparator-i;ascii-numeric"'),
        ('require "relational"; if header :count "zz" "a" "1" { }', '"gt", "ge"'),
        ("if frobnicate { }", 'unknown test "frobnicate"'),
        ("frobnicate;", 'unknown command "frobnicate"'),
        ("keep { }", "takes no block"),
        ("if true keep;", "needs a block"),
        ('redirect ["a@b.example", "c@d.example"];', "expects string"),
        ('require "variables"; set "1a" "x";', "is not a variable name"),
        ('require "date"; if currentdate "fortnight" "1" { }', 'unknown date part "fortnight"'),
        ('require "index"; if header :last "a" "b" { }', '":last" needs ":index"'),
        ('"unterminated', "expected an identifier"),
        ('keep "unterminated', "unterminated quoted string"),
        ("reject text:\nno end\n", "unterminated multi-line string"),
        ("/* never closed", "unterminated /* comment"),
        ("if size :over 99999999999999999999 { }", "number too large"),
    ],
)
def test_bad_scripts_are_refused_with_a_clear_reason(text: str, message: str) -> None:
    """Unknown or un-required extensions, bad tags and arguments, and broken tokens are errors that say why."""
    assert message in str(_error(text))


def test_every_extension_can_be_required_and_used() -> None:
    """A script using each supported extension compiles."""
    script = grammar.compile(
        "require [" + ", ".join(f'"{e}"' for e in sorted(grammar.EXTENSIONS)) + "];\n"
        'if address :user :comparator "i;ascii-numeric" :value "gt" "to" "5" { ereject "no"; }\n'
        'if envelope :detail "to" "x" { fileinto :copy :create :flags "\\\\Seen" "Box"; }\n'
        'if body :content "text" :contains "x" { addheader :last "X-A" "b"; deleteheader :index 1 :last "X-A"; }\n'
        'if date :originalzone "date" "year" "2024" { setflag "f" "a"; }\n'
        'if duplicate :seconds 60 :uniqueid "x" { discard; }\n'
        'if hasflag :count "ge" "f" "1" { vacation :seconds 60 :subject "s" :from "a@b.example" "r"; }\n'
        'if mailboxexists "x" { set :lower :upperfirst "v" "X"; }\n'
        'if string :matches "${v}" "?" { redirect :copy "a@b.example"; }\n'
    )
    assert len(script.commands) == 8


def test_size_limit_is_enforced_before_parsing() -> None:
    """A script over sieve.max_script_size is refused, naming the key."""
    with pytest.raises(SieveError, match="max_script_size"):
        grammar.compile("keep;" * 100, max_size=100)


def test_nesting_limit_is_enforced() -> None:
    """Blocks or tests nested past sieve.max_nesting are refused, naming the key (no recursion blowup)."""
    deep = "if true { " * 50 + "keep;" + " }" * 50
    with pytest.raises(SieveError, match="max_nesting"):
        grammar.compile(deep, max_nesting=32)
    nots = "if " + "not " * 100 + "true { keep; }"
    with pytest.raises(SieveError, match="max_nesting"):
        grammar.compile(nots, max_nesting=32)
    grammar.compile("if true { " * 30 + "keep;" + " }" * 30)


@pytest.mark.parametrize(
    "hostile",
    [
        'keep "' + "\\\\" * 200_000 + '";',
        'keep "' + '\\"' * 200_000 + '";',
        "#" * 500_000,
        "/*" + "*" * 500_000 + "*/",
        "reject text:\n" + ".\n." * 100_000 + "\n.\n;",
        "keep " + '"a", ' * 100_000,
        "keep [" + '"a",' * 100_000 + '"a"];',
    ],
)
def test_parsing_is_linear_on_hostile_scripts(hostile: str) -> None:
    """Scripts of about a megabyte built to trip a quadratic lexer parse (or fail) in well under a second."""
    start = time.process_time()
    with contextlib.suppress(SieveError):
        grammar.compile(hostile, max_size=2 * 1024 * 1024)
    assert time.process_time() - start < 1.0
