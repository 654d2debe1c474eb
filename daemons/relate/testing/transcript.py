"""A transcript runner: drive a line protocol from a file in RFC ``C:``/``S:`` notation, strictly.

A transcript is one conversation, written the way the RFCs print theirs::

    # Comments and blank lines are ignored.
    S: * OK [CAPABILITY {[^]]*}] {.*}
    C: a1 LOGIN alice@example.com $KEY
    S: a1 OK {.*}
    C: a2 APPEND INBOX {13}
    S: + {.*}
    C: Subject: hi
    C:
    S: a2 OK [APPENDUID {\\d+} 5] APPEND completed

Rules, all of them:

- ``C: text`` sends ``text`` and CRLF. A line ending in a literal marker
  (``{n}``, ``{n+}``, ``~{n}``) is followed by ``C:`` lines that form exactly
  n octets, each line break counting as CRLF; the literal may end inside a
  line, whose rest continues the command (RFC 9051 §7.5's LOGIN example), or
  right after a line break, when the next ``C:`` line continues the command
  (an empty one ends it). A synchronizing literal's ``+`` continuation request
  must be scripted, as an ``S:`` line, before its data; if the ``S:`` line
  there is not a ``+`` line the server refused the literal (``NO [TOOBIG]``)
  and the command is over, with no data sent.
- ``S: text`` must equal the server's next line (without its CRLF), whole.
  ``{regex}`` is a hole matching a variable part (braces inside it nest);
  everything else matches literally. ``{{`` and ``}}`` stand for ``{`` and
  ``}``, and a ``{digits}`` or ``{digits+}`` is literal too (an IMAP literal
  marker: a hole holding only digits would be pointless). Server lines are
  split at CRLF, literals included, so a literal's lines are ``S:`` lines too.
  Trailing spaces count; write one as a hole (``S: +{ }``) so no editor eats it.
- ``S:`` lines are matched strictly in order, no reordering of untagged data.
- ``$NAME`` is replaced by a value the caller supplies, before anything else;
  names the caller does not supply stay as they are (``$Forwarded`` is a
  keyword). In ``S:`` lines a substituted value matches literally.

A run fails, with the file and line, what was expected and what came
instead, and the last few lines of the exchange, when a server line does not
match, when the server is silent for ``read_timeout`` seconds, when the connection
closes with scripted lines left unconsumed, or when the server sends
anything after the script's last line.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import re
import ssl
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_LITERAL_MARKER = re.compile(r"~?\{(\d{1,10})(\+?)\}$")
_DIGITS_HOLE = re.compile(r"\d+\+?")
_NAME = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_HISTORY = 12


class TranscriptError(AssertionError):
    """A transcript failed to run or to parse; the message says where and why."""


class TranscriptSyntaxError(TranscriptError):
    """The transcript file itself is malformed."""


@dataclass(frozen=True)
class Send:
    """A ``C:`` line: the octets to send (CRLF included)."""

    data: bytes
    text: str
    lineno: int


@dataclass(frozen=True)
class Expect:
    """An ``S:`` line: the pattern one server line must match."""

    pattern: re.Pattern[str]
    text: str
    lineno: int


Step = Send | Expect


@dataclass(frozen=True)
class Transcript:
    """A parsed transcript: its steps in order, and the file they came from."""

    path: str
    steps: tuple[Step, ...]

    @classmethod
    def load(cls, path: str | Path, substitutions: Mapping[str, str] | None = None) -> Transcript:
        """Read and parse a transcript file (UTF-8)."""
        return cls.parse(Path(path).read_text(encoding="utf-8"), str(path), substitutions)

    @classmethod
    def parse(
        cls, source: str, path: str = "<transcript>", substitutions: Mapping[str, str] | None = None
    ) -> Transcript:
        """Parse transcript text; raises TranscriptSyntaxError with file:line on malformed input."""
        subs = dict(substitutions or {})
        steps: list[Step] = []
        lit = _Literal()
        for lineno, raw_line in enumerate(source.splitlines(), start=1):
            line = raw_line.rstrip("\r")
            if not lit.left and (not line.strip() or line.lstrip().startswith("#")):
                continue
            kind, text = _split_kind(line, path, lineno, in_literal=lit.left > 0)
            if kind == "S":
                if lit.awaiting_plus:
                    # The server either invites the literal ("+ ...") or refuses the command outright.
                    lit.awaiting_plus = False
                    if not text.startswith("+"):
                        lit.left = 0
                steps.append(Expect(_compile(text, subs, path, lineno), text, lineno))
                continue
            text = _substitute(text, subs)
            data = text.encode("utf-8")
            if lit.awaiting_plus:
                raise TranscriptSyntaxError(
                    f"{path}:{lineno}: script the server's continuation request (S: + ...) before sending "
                    f"the data of the synchronizing literal opened on line {lit.opened}"
                )
            rest: bytes | None = data
            if lit.left:
                # Literal octets first: this line's text, then its CRLF.
                if len(data) >= lit.left:
                    rest, lit.left = data[lit.left :], 0
                elif len(data) + 2 > lit.left:
                    raise TranscriptSyntaxError(
                        f"{path}:{lineno}: the literal opened on line {lit.opened} ends between CR and LF"
                    )
                else:
                    rest, lit.left = None, lit.left - len(data) - 2
            if rest is not None:
                lit.open(rest, lineno)
            steps.append(Send(data + b"\r\n", text, lineno))
        if lit.left:
            raise TranscriptSyntaxError(
                f"{path}:{lit.opened}: the file ends {lit.left} octets before the literal opened here is complete"
            )
        return cls(path, tuple(steps))


@dataclass
class _Literal:
    """The client literal being scripted, if any."""

    left: int = 0  # octets still to come
    opened: int = 0  # the line that opened it
    awaiting_plus: bool = False  # synchronizing, and the server's "+" is not scripted yet

    def open(self, command_text: bytes, lineno: int) -> None:
        m = _LITERAL_MARKER.search(command_text.decode("utf-8", "replace"))
        if m is not None:
            self.left, self.opened = int(m.group(1)), lineno
            self.awaiting_plus = not m.group(2)


def _split_kind(line: str, path: str, lineno: int, *, in_literal: bool) -> tuple[str, str]:
    """("C" or "S", the text after the marker and its one space)."""
    for kind in ("C", "S"):
        if line == f"{kind}:":
            return kind, ""
        if line.startswith(f"{kind}: "):
            return kind, line[3:]
    where = "inside a client literal, every line must be a C: or S: line" if in_literal else "expected C: or S:"
    raise TranscriptSyntaxError(f"{path}:{lineno}: {where}, got {line!r}")


def _substitute(text: str, subs: Mapping[str, str]) -> str:
    return _NAME.sub(lambda m: subs.get(m.group(1), m.group(0)), text)


def _compile(text: str, subs: Mapping[str, str], path: str, lineno: int) -> re.Pattern[str]:
    """An ``S:`` line as a regex: holes as they are, everything else (substitutions too) escaped."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if text.startswith("{{", i) or text.startswith("}}", i):
            out.append(re.escape(ch))
            i += 2
        elif ch == "{":
            end = _hole_end(text, i, path, lineno)
            body = text[i + 1 : end]
            if _DIGITS_HOLE.fullmatch(body):
                out.append(re.escape(text[i : end + 1]))
            else:
                try:
                    re.compile(body)
                except re.error as exc:
                    raise TranscriptSyntaxError(f"{path}:{lineno}: bad regex in hole {{{body}}}: {exc}") from None
                out.append(f"(?:{body})")
            i = end + 1
        elif ch == "}":
            raise TranscriptSyntaxError(f"{path}:{lineno}: unmatched }} at column {i + 4}; write }}}} for a brace")
        elif ch == "$" and (m := _NAME.match(text, i)) and m.group(1) in subs:
            out.append(re.escape(subs[m.group(1)]))
            i = m.end()
        else:
            out.append(re.escape(ch))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def _hole_end(text: str, start: int, path: str, lineno: int) -> int:
    """Index of the ``}`` closing the hole opened at ``start`` (nested braces and ``\\}`` allowed)."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise TranscriptSyntaxError(f"{path}:{lineno}: unclosed {{ at column {start + 4}; write {{{{ for a brace")


@dataclass
class Result:
    """What a successful run exchanged, for tests that want to look further."""

    received: list[str] = field(default_factory=list)
    sent: int = 0


class _Run:
    def __init__(self, transcript: Transcript, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.t = transcript
        self.reader = reader
        self.writer = writer
        self.history: collections.deque[str] = collections.deque(maxlen=_HISTORY)
        self.result = Result()

    def fail(self, lineno: int, what: str, detail: Sequence[str] = ()) -> TranscriptError:
        lines = [f"{self.t.path}:{lineno}: {what}", *detail]
        if self.history:
            lines.append("last lines of the exchange:")
            lines += [f"  {h}" for h in self.history]
        return TranscriptError("\n".join(lines))

    def left_over(self, index: int) -> list[str]:
        rest = self.t.steps[index:]
        shown = [f"  {s.lineno}: {'C' if isinstance(s, Send) else 'S'}: {s.text}" for s in rest[:10]]
        if len(rest) > 10:
            shown.append(f"  ... and {len(rest) - 10} more")
        return [f"{len(rest)} scripted line(s) left unconsumed:", *shown]

    async def read_line(self, seconds: float) -> str:
        """The server's next line without CRLF; IncompleteReadError at the end of the stream."""
        async with asyncio.timeout(seconds):
            data = await self.reader.readuntil(b"\r\n")
        return data[:-2].decode("utf-8", "backslashreplace")

    async def run(self, read_timeout: float, trailing: float) -> Result:
        __tracebackhide__ = True  # pytest: the failure message says it all
        for index, step in enumerate(self.t.steps):
            if isinstance(step, Send):
                if self.writer.is_closing() or self.reader.at_eof():
                    raise self.fail(step.lineno, "the server closed the connection", self.left_over(index))
                self.writer.write(step.data)
                try:
                    await self.writer.drain()
                except ConnectionError as exc:
                    raise self.fail(step.lineno, f"sending failed: {exc}", self.left_over(index)) from None
                self.history.append(f"C: {step.text}")
                self.result.sent += 1
                continue
            try:
                got = await self.read_line(read_timeout)
            except TimeoutError:
                raise self.fail(
                    step.lineno,
                    f"timed out after {read_timeout:g} s waiting for the server",
                    [f"  expected: S: {step.text}", *self.left_over(index)],
                ) from None
            except asyncio.IncompleteReadError as exc:
                partial = exc.partial.decode("utf-8", "backslashreplace")
                detail = [f"  expected: S: {step.text}"] + ([f"  got (unterminated): {partial!r}"] if partial else [])
                raise self.fail(
                    step.lineno, "the server closed the connection", detail + self.left_over(index)
                ) from None
            except (asyncio.LimitOverrunError, ValueError):
                raise self.fail(step.lineno, "server line too long", [f"  expected: S: {step.text}"]) from None
            except ConnectionError as exc:
                raise self.fail(step.lineno, f"connection error: {exc}", self.left_over(index)) from None
            self.result.received.append(got)
            if step.pattern.fullmatch(got) is None:
                raise self.fail(
                    step.lineno,
                    "the server's line does not match",
                    [f"- expected: S: {step.text}", f"+ got:      S: {got}"],
                )
            self.history.append(f"S: {got}")
        await self.check_quiet(trailing)
        return self.result

    async def check_quiet(self, trailing: float) -> None:
        """Nothing may follow the script: end of stream, or silence for ``trailing`` seconds."""
        __tracebackhide__ = True
        last = self.t.steps[-1].lineno if self.t.steps else 0
        try:
            extra = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), trailing)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return  # the server closed the connection: fine
            extra = exc.partial
        except (TimeoutError, ConnectionError):
            return
        except (asyncio.LimitOverrunError, ValueError):
            extra = b"(an overlong line)"
        text = extra.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
        raise self.fail(last, "the server sent more than the script expects", [f"+ unexpected: S: {text}"])


async def run(
    transcript: Transcript,
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    read_timeout: float = 10.0,
    trailing: float = 0.2,
) -> Result:
    """Connect to ``host:port`` (over TLS when ``tls`` is given) and play the transcript; raises TranscriptError.

    ``read_timeout`` bounds each wait for a server line; ``trailing`` is how
    long the server must stay quiet after the last scripted line, unless it
    closes the connection first (as after LOGOUT).
    """
    __tracebackhide__ = True
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=tls, server_hostname=server_hostname if tls else None, limit=16 * 1024 * 1024
            ),
            read_timeout,
        )
    except (OSError, TimeoutError) as exc:
        raise TranscriptError(f"{transcript.path}: cannot connect to {host}:{port}: {exc!r}") from None
    try:
        return await _Run(transcript, reader, writer).run(read_timeout, trailing)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m relate.testing.transcript --port 143 -D KEY=... FILE...``: play transcripts against a server."""
    ap = argparse.ArgumentParser(
        prog="python -m relate.testing.transcript", description="Play C:/S: transcripts against a server."
    )
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls", action="store_true", help="implicit TLS (certificate not checked)")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME=VALUE")
    args = ap.parse_args(argv)
    subs = dict(d.split("=", 1) for d in args.defines)
    context: ssl.SSLContext | None = None
    if args.tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    failed = 0
    for path in args.files:
        try:
            asyncio.run(run(Transcript.load(path, subs), args.host, args.port, tls=context, read_timeout=args.timeout))
        except TranscriptError as exc:
            failed += 1
            print(f"FAIL {exc}", file=sys.stderr)
        else:
            print(f"ok   {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
