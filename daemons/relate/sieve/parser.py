"""The Sieve grammar (RFC 5228 §8.1 lexical tokens, §8.2 grammar), parsed by a cursor over the script.

Why our own parser and not sievelib (PyPI, Debian ``python3-sievelib``):
sievelib 1.4 knows neither ``ereject``, ``editheader``, ``duplicate``,
``index`` nor ``subaddress`` (its command table cannot be told the tags and
arguments those add without subclassing its internals), reports a line but
no column, and its lexer is a regular expression with alternatives that it
re-enters per token. This module is one left-to-right pass: every character
is looked at a bounded number of times, so parsing is linear in the script's
size, and the size itself (``sieve.max_script_size``) and the nesting of
blocks and tests (``sieve.max_nesting``) are limited before any work grows
with them. What the grammar accepts is then checked command by command
against the table in :mod:`relate.sieve.grammar`.

Tokens (RFC 5228 §8.1): identifiers, tags (``:name``), numbers with the
quantifiers K, M and G (2^10, 2^20, 2^30), quoted strings (``\\`` escapes the
next character, whatever it is: RFC 5228 §2.4.2 reads an undefined escape
as the character alone), multi-line strings (``text:`` ... ``.`` with
dot-unstuffing), string lists, ``#`` comments to the end of the line and
``/* */`` comments. Line ends may be CRLF or a bare LF (scripts edited on
Unix); multi-line strings are returned with CRLF line ends as §2.4.2 defines.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from relate.sieve.errors import SieveError

DEFAULT_MAX_SIZE = 1024 * 1024
DEFAULT_MAX_NESTING = 32
MAX_NUMBER = 2**63 - 1

_QUANTIFIERS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_ID_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_ID_CHARS = _ID_START | frozenset("0123456789")
_DIGITS = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class Tag:
    name: str  # lower-case, without the colon


@dataclass(frozen=True, slots=True)
class Number:
    value: int


@dataclass(frozen=True, slots=True)
class Strings:
    values: tuple[str, ...]
    is_list: bool  # written as [ ... ] (a one-string list is still a list)


Argument = Tag | Number | Strings


@dataclass(frozen=True, slots=True)
class Test:
    name: str  # lower-case
    args: tuple[Argument, ...]
    tests: tuple[Test, ...]
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # lower-case
    args: tuple[Argument, ...]
    tests: tuple[Test, ...]  # the test of if/elsif, or none
    block: tuple[Command, ...] | None  # None: the command ends with ";"
    line: int
    column: int


def parse(
    text: str | bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_nesting: int = DEFAULT_MAX_NESTING
) -> list[Command]:
    """The commands of a script, as the grammar has them (not yet validated: see grammar.compile)."""
    if isinstance(text, bytes):
        if len(text) > max_size:
            raise SieveError(f"script is {len(text)} bytes, more than the limit of {max_size} (sieve.max_script_size)")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SieveError(f"script is not UTF-8 (byte {exc.start})") from None
    elif len(text.encode("utf-8")) > max_size:
        raise SieveError(f"script is more than the limit of {max_size} bytes (sieve.max_script_size)")
    return _Parser(text, max_nesting).script()


class _Parser:
    def __init__(self, text: str, max_nesting: int) -> None:
        self.text = text
        self.pos = 0
        self.max_nesting = max_nesting
        self.depth = 0
        self._lines = [i for i, c in enumerate(text) if c == "\n"]

    # -- positions and errors

    def where(self, pos: int) -> tuple[int, int]:
        """(line, column), both 1-based, of a character offset."""
        line = bisect.bisect_left(self._lines, pos)
        start = self._lines[line - 1] + 1 if line else 0
        return line + 1, pos - start + 1

    def fail(self, message: str, pos: int | None = None) -> SieveError:
        line, column = self.where(self.pos if pos is None else pos)
        return SieveError(message, line, column)

    def what(self) -> str:
        """The token at the cursor, for an error message."""
        if self.pos >= len(self.text):
            return "end of script"
        c = self.text[self.pos]
        if c in _ID_START:
            end = self.pos
            while end < len(self.text) and end - self.pos < 40 and self.text[end] in _ID_CHARS:
                end += 1
            return f'"{self.text[self.pos : end]}"'
        return f'"{c}"'

    # -- white space and comments (RFC 5228 §8.1: white-space = 1*(SP / CRLF / HTAB) / comment)

    def skip(self) -> None:
        text, n = self.text, len(self.text)
        while self.pos < n:
            c = text[self.pos]
            if c in " \t\r\n":
                self.pos += 1
            elif c == "#":
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end + 1
            elif c == "/" and text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.fail("unterminated /* comment")
                self.pos = end + 2
            else:
                return

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, c: str) -> None:
        if self.peek() != c:
            raise self.fail(f'expected "{c}", found {self.what()}')
        self.pos += 1

    def identifier(self) -> str:
        start = self.pos
        text, n = self.text, len(self.text)
        if start >= n or text[start] not in _ID_START:
            raise self.fail(f"expected an identifier, found {self.what()}")
        end = start + 1
        while end < n and text[end] in _ID_CHARS:
            end += 1
        self.pos = end
        return text[start:end].lower()

    # -- the grammar (RFC 5228 §8.2)

    def script(self) -> list[Command]:
        commands = self.commands()
        if self.peek():
            raise self.fail(f"expected a command, found {self.what()}")
        return commands

    def commands(self) -> list[Command]:
        out: list[Command] = []
        while True:
            c = self.peek()
            if not c or c == "}":
                return out
            out.append(self.command())

    def command(self) -> Command:
        start = self.pos
        line, column = self.where(start)
        name = self.identifier()
        args, tests = self.arguments()
        c = self.peek()
        if c == ";":
            self.pos += 1
            return Command(name, args, tests, None, line, column)
        if c == "{":
            self.nest()
            self.pos += 1
            block = self.commands()
            self.expect("}")
            self.depth -= 1
            return Command(name, args, tests, tuple(block), line, column)
        raise self.fail(f'expected ";" or "{{" after {name!r}, found {self.what()}')

    def nest(self) -> None:
        self.depth += 1
        if self.depth > self.max_nesting:
            raise self.fail(f"blocks and tests nest more than {self.max_nesting} deep (sieve.max_nesting)")

    def arguments(self) -> tuple[tuple[Argument, ...], tuple[Test, ...]]:
        args: list[Argument] = []
        while True:
            c = self.peek()
            if c == ":":
                self.pos += 1
                if self.pos >= len(self.text) or self.text[self.pos] not in _ID_START:
                    raise self.fail('expected a tag name after ":"')
                args.append(Tag(self.identifier()))
            elif c in _DIGITS and c:
                args.append(Number(self.number()))
            elif c == '"' or c == "[" or (c in "tT" and self.text[self.pos : self.pos + 5].lower() == "text:"):
                args.append(self.string_list())
            else:
                break
        c = self.peek()
        if c == "(":
            self.nest()
            self.pos += 1
            tests = [self.test()]
            while self.peek() == ",":
                self.pos += 1
                tests.append(self.test())
            self.expect(")")
            self.depth -= 1
            return tuple(args), tuple(tests)
        if c and c in _ID_START:
            return tuple(args), (self.test(),)
        return tuple(args), ()

    def test(self) -> Test:
        self.skip()
        line, column = self.where(self.pos)
        name = self.identifier()
        self.nest()
        args, tests = self.arguments()
        self.depth -= 1
        return Test(name, args, tests, line, column)

    def number(self) -> int:
        start = self.pos
        text, n = self.text, len(self.text)
        end = start
        while end < n and text[end] in _DIGITS:
            end += 1
        if end - start > 19:
            raise self.fail("number too large", start)
        value = int(text[start:end])
        if end < n and text[end].lower() in _QUANTIFIERS:
            value *= _QUANTIFIERS[text[end].lower()]
            end += 1
        if end < n and text[end] in _ID_CHARS:
            raise self.fail("a number must be digits and one of the quantifiers K, M or G", start)
        if value > MAX_NUMBER:
            raise self.fail("number too large", start)
        self.pos = end
        return value

    def string_list(self) -> Strings:
        if self.peek() != "[":
            return Strings((self.string(),), False)
        self.pos += 1
        values = [self.string()]
        while self.peek() == ",":
            self.pos += 1
            values.append(self.string())
        self.expect("]")
        return Strings(tuple(values), True)

    def string(self) -> str:
        c = self.peek()
        if c == '"':
            return self.quoted()
        if c in "tT" and self.text[self.pos : self.pos + 5].lower() == "text:":
            return self.multiline()
        raise self.fail(f"expected a string, found {self.what()}")

    def quoted(self) -> str:
        text = self.text
        start = self.pos
        pos = run = start + 1
        parts: list[str] = []
        # The closing quote and each backslash are found by str.find (C speed); every character is
        # passed once, so a string of backslashes costs no more than any other.
        q = text.find('"', pos)
        while q >= 0:
            b = text.find("\\", pos, q)
            if b < 0:
                parts.append(text[run:q])
                self.pos = q + 1
                return "".join(parts)
            parts.append(text[run:b])
            parts.append(text[b + 1])
            pos = run = b + 2
            if b + 1 == q:  # an escaped quote: the string goes on to the next one
                q = text.find('"', pos)
        raise self.fail("unterminated quoted string", start)

    def multiline(self) -> str:
        # RFC 5228 §8.1: "text:" *(SP / HTAB) (hash-comment / CRLF) *(multiline-literal / multiline-dotstart) "." CRLF
        text, n = self.text, len(self.text)
        start = self.pos
        pos = self.pos + 5
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos < n and text[pos] == "#":
            pos = text.find("\n", pos)
            if pos < 0:
                raise self.fail("unterminated multi-line string", start)
        elif text.startswith("\r\n", pos):
            pos += 1
        elif pos >= n or text[pos] != "\n":
            raise self.fail('expected the end of the line after "text:"', pos)
        pos += 1
        lines: list[str] = []
        while True:
            end = text.find("\n", pos)
            if end < 0:
                if text[pos:].rstrip("\r") == ".":  # the last line may lack its line break
                    self.pos = n
                    return "".join(lines)
                raise self.fail('unterminated multi-line string (no line with "." alone)', start)
            line = text[pos:end]
            if line.endswith("\r"):
                line = line[:-1]
            pos = end + 1
            if line == ".":
                self.pos = pos
                return "".join(lines)
            if line.startswith("."):
                line = line[1:]
            lines.append(line + "\r\n")
