"""A byte-level IMAP client on a real socket, a response parser, and message builders for the IMAP tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests import support
from tests.support import RawClient

_LITERAL_END = re.compile(rb"~?\{(\d+)\}$")
_TAGGED = re.compile(rb"^(\S+) (OK|NO|BAD)(?: \[([^\]]*)\])? ?(.*)$", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Lit:
    """A literal inside a command: synchronizing (waits for ``+``) unless ``plus`` (LITERAL+)."""

    data: bytes
    plus: bool = False
    binary: bool = False


@dataclass
class Result:
    """What one tagged command produced: the untagged lines before the tagged one, and the tagged one."""

    tag: str
    untagged: list[bytes] = field(default_factory=list)
    line: bytes = b""
    continuations: list[bytes] = field(default_factory=list)

    def _match(self) -> re.Match[bytes]:
        m = _TAGGED.match(self.line)
        assert m is not None, self.line
        return m

    @property
    def status(self) -> str:
        return self._match().group(2).decode().upper()

    @property
    def code(self) -> str | None:
        code = self._match().group(3)
        return code.decode() if code is not None else None

    @property
    def text(self) -> str:
        return self._match().group(4).decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    def lines(self, kind: str) -> list[bytes]:
        """Untagged lines whose first word (or second, after a number) is ``kind``, e.g. ``LIST``, ``EXISTS``."""
        out = []
        for raw in self.untagged:
            words = raw[2:].split(b" ", 2)
            if words[0].upper() == kind.encode().upper() or (
                len(words) > 1 and words[0].isdigit() and words[1].upper() == kind.encode().upper()
            ):
                out.append(raw)
        return out

    def fetches(self) -> dict[int, dict[str, Any]]:
        """``* n FETCH (...)`` responses as {n: {item: value}} (later responses for one n are merged)."""
        out: dict[int, dict[str, Any]] = {}
        for raw in self.lines("FETCH"):
            n, items = parse_fetch(raw)
            out.setdefault(n, {}).update(items)
        return out

    def search(self) -> list[int]:
        """The numbers of the ``* SEARCH`` response."""
        (line,) = self.lines("SEARCH")
        return [int(x) for x in line.split()[2:]]

    def esearch(self) -> dict[str, Any]:
        """The ``* ESEARCH`` response as {"TAG": ..., "UID": bool, "MIN": ..., "ALL": "1:3", ...}."""
        (line,) = self.lines("ESEARCH")
        values = parse_values(line[len(b"* ESEARCH ") :])
        out: dict[str, Any] = {"UID": False}
        i = 0
        while i < len(values):
            item = values[i]
            if isinstance(item, list):
                out["TAG"] = item[1].decode()
                i += 1
            elif item.upper() == "UID":
                out["UID"] = True
                i += 1
            else:
                out[item.upper()] = values[i + 1]
                i += 2
        return out

    def codes(self) -> list[str]:
        """Response codes of untagged OK/NO lines, e.g. ``UIDVALIDITY 1234``."""
        out = []
        for raw in self.untagged:
            m = re.match(rb"^\* (?:OK|NO|BAD) \[([^\]]*)\]", raw)
            if m:
                out.append(m.group(1).decode())
        return out

    def code_value(self, name: str) -> str:
        """The argument of an untagged response code, e.g. ``code_value("UIDVALIDITY")``."""
        for code in self.codes():
            if code.split(" ", 1)[0].upper() == name.upper():
                return code.split(" ", 1)[1] if " " in code else ""
        raise AssertionError(f"no [{name}] in {self.untagged!r}")

    def __str__(self) -> str:
        return "\n".join(x.decode("utf-8", "replace") for x in [*self.untagged, self.line])


class ImapClient(RawClient):
    """A byte-level IMAP client. Every client opened is closed at the end of the test (conftest)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self.greeting = b""
        self.pending: list[bytes] = []  # untagged lines read while waiting for something else
        self._n = 0

    @classmethod
    async def connect(cls, port: int, *, tls: ssl.SSLContext | None = None, greet: bool = True) -> ImapClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=tls, limit=16 * 1024 * 1024), 10
        )
        client = cls(reader, writer)
        if greet:
            client.greeting = await client.read_line()
        return client

    def next_tag(self) -> str:
        self._n += 1
        return f"A{self._n:03d}"

    # -- reading ----------------------------------------------------------------------

    async def read_line(self, wait: float = 10) -> bytes:
        """One response line with its literals inline (``{n}\\r\\n`` and the data kept), no final CRLF."""
        out = b""
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), wait)
            if not raw:
                raise ConnectionError(f"connection closed after {out!r}")
            if not raw.endswith(b"\n"):
                raise ConnectionError(f"connection closed mid-line: {out + raw!r}")
            line = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
            m = _LITERAL_END.search(line)
            if m is None:
                return out + line
            data = await asyncio.wait_for(self.reader.readexactly(int(m.group(1))), wait)
            out += line + b"\r\n" + data

    async def read_until(self, predicate: Callable[[bytes], bool], wait: float = 10) -> list[bytes]:
        """Lines up to and including the first for which ``predicate`` holds."""
        lines = []
        deadline = time.monotonic() + wait
        while True:
            line = await self.read_line(max(0.01, deadline - time.monotonic()))
            lines.append(line)
            if predicate(line):
                return lines

    async def read_tagged(self, tag: str, wait: float = 10) -> Result:
        result = Result(tag)
        while True:
            line = await self.read_line(wait)
            if line.startswith(tag.encode() + b" "):
                result.line = line
                return result
            if line.startswith(b"+"):
                result.continuations.append(line)
            else:
                result.untagged.append(line)

    async def untagged_within(self, wait: float) -> list[bytes]:
        """Every line the server sends in the next ``wait`` seconds (unsolicited responses)."""
        lines = []
        deadline = time.monotonic() + wait
        with contextlib.suppress(TimeoutError):
            while (left := deadline - time.monotonic()) > 0:
                lines.append(await self.read_line(left))
        return lines

    # -- writing ----------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, *pieces: str | bytes | Lit, tag: str | None = None, wait: float = 10) -> Result:
        """Send ``tag pieces...`` (literals as given) and read up to the tagged response.

        A synchronizing literal waits for the server's ``+``; if the tagged answer comes instead
        (e.g. NO [TOOBIG]) it is returned at once and the rest of the command is not sent.
        """
        tag = tag or self.next_tag()
        result = Result(tag)
        buf = tag.encode() + b" "
        for piece in pieces:
            if isinstance(piece, Lit):
                marker = b"~" if piece.binary else b""
                buf += marker + b"{%d%s}\r\n" % (len(piece.data), b"+" if piece.plus else b"")
                await self.send(buf)
                buf = b""
                if not piece.plus:
                    while True:
                        line = await self.read_line(wait)
                        if line.startswith(b"+"):
                            result.continuations.append(line)
                            break
                        if line.startswith(tag.encode() + b" "):
                            result.line = line
                            return result
                        result.untagged.append(line)
                buf = piece.data
            else:
                buf += piece.encode("utf-8") if isinstance(piece, str) else piece
        await self.send(buf + b"\r\n")
        done = await self.read_tagged(tag, wait)
        done.untagged[:0] = result.untagged
        done.continuations[:0] = result.continuations
        return done

    async def ok(self, *pieces: str | bytes | Lit, wait: float = 10) -> Result:
        """A command that must succeed."""
        result = await self.command(*pieces, wait=wait)
        assert result.ok, str(result)
        return result

    async def login(self, user: str, key: str) -> Result:
        return await self.ok(f"LOGIN {user} {key}")

    # -- IDLE ---------------------------------------------------------------------------

    async def idle(self) -> str:
        tag = self.next_tag()
        await self.send(tag.encode() + b" IDLE\r\n")
        line = await self.read_line()
        assert line.startswith(b"+"), line
        return tag

    async def done(self, tag: str) -> Result:
        await self.send(b"DONE\r\n")
        return await self.read_tagged(tag)

    # -- the end --------------------------------------------------------------------------


# -- the response parser ----------------------------------------------------------------------


def _atom_end(buf: bytes, pos: int) -> int:
    """End of an atom starting at ``pos``; ``[...]`` (with spaces and parentheses inside) belongs to it."""
    depth = 0
    while pos < len(buf):
        ch = buf[pos : pos + 1]
        if ch == b"[":
            depth += 1
        elif ch == b"]":
            depth -= 1
        elif depth == 0 and ch in (b" ", b"(", b")"):
            break
        pos += 1
    return pos


def _value(buf: bytes, pos: int) -> tuple[Any, int]:
    ch = buf[pos : pos + 1]
    if ch == b"(":
        items: list[Any] = []
        pos += 1
        while True:
            while buf[pos : pos + 1] == b" ":
                pos += 1
            if buf[pos : pos + 1] == b")":
                return items, pos + 1
            if pos >= len(buf):
                raise ValueError(f"unbalanced parentheses in {buf!r}")
            item, pos = _value(buf, pos)
            items.append(item)
    if ch == b'"':
        out = bytearray()
        pos += 1
        while buf[pos : pos + 1] != b'"':
            if buf[pos : pos + 1] == b"\\":
                pos += 1
            out += buf[pos : pos + 1]
            pos += 1
            if pos >= len(buf):
                raise ValueError(f"unterminated string in {buf!r}")
        return bytes(out), pos + 1
    m = re.compile(rb"~?\{(\d+)\}\r\n").match(buf, pos)
    if m:
        start = m.end()
        end = start + int(m.group(1))
        return buf[start:end], end
    end = _atom_end(buf, pos)
    if end == pos:
        raise ValueError(f"cannot parse {buf[pos : pos + 40]!r}")
    atom = buf[pos:end].decode("utf-8", "replace")
    return (None if atom.upper() == "NIL" else atom), end


def parse_values(buf: bytes) -> list[Any]:
    """Space-separated IMAP values: lists, quoted strings and literals (bytes), atoms (str), NIL (None)."""
    out = []
    pos = 0
    while pos < len(buf):
        if buf[pos : pos + 1] == b" ":
            pos += 1
            continue
        value, pos = _value(buf, pos)
        out.append(value)
    return out


def parse_fetch(line: bytes) -> tuple[int, dict[str, Any]]:
    """``* 3 FETCH (UID 7 FLAGS (\\Seen) BODY[] {5}\\r\\nhello)`` -> (3, {"UID": "7", "FLAGS": [...], ...})."""
    m = re.match(rb"^\* (\d+) FETCH ", line)
    assert m is not None, line
    (items,) = parse_values(line[m.end() :])
    out: dict[str, Any] = {}
    for i in range(0, len(items), 2):
        out[str(items[i]).upper()] = items[i + 1]
    return int(m.group(1)), out


def list_lines(result: Result) -> dict[str, tuple[list[str], bytes]]:
    """LIST/LSUB responses as {name: (attributes, raw name bytes)} (names decoded as UTF-8)."""
    out = {}
    for raw in result.lines("LIST") + result.lines("LSUB"):
        values = parse_values(raw.split(b" ", 2)[2])
        attrs, _delim, name, *_extended = values  # extended data (CHILDINFO) may follow
        name_bytes = name if isinstance(name, bytes) else name.encode()
        out[name_bytes.decode("utf-8")] = ([str(a) for a in attrs], name_bytes)
    return out


def status_items(line: bytes) -> dict[str, int]:
    """``* STATUS name (MESSAGES 2 UIDNEXT 5)`` -> {"MESSAGES": 2, "UIDNEXT": 5}."""
    values = parse_values(line[len(b"* STATUS ") :])
    items = values[-1]
    return {str(items[i]).upper(): int(items[i + 1]) for i in range(0, len(items), 2)}


# -- logs ------------------------------------------------------------------------------------


class LogLines(logging.Handler):
    """Every record emitted below one logger, at any level, as the daemon would write it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, start: int = 0) -> list[str]:
        return [r.getMessage() for r in self.records[start:]]


@contextlib.contextmanager
def captured_logs(name: str = "") -> Iterator[LogLines]:
    """What ``name`` (default: every logger, asyncio's included) logs meanwhile, debug lines too."""
    handler = LogLines()
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# -- messages -------------------------------------------------------------------------------


make_message = support.make_message
