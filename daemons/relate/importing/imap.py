"""Reading a whole account from a live IMAP server (RFC 9051 / RFC 3501 client side), for relatectl import.

Blocking (Python's imaplib): it runs in a worker thread of its own while
the importer stores what it read (services/imports.py).

Policy:

- Folders: every name LIST ``"" "*"`` gives, except those marked
  ``\\Noselect``/``\\NonExistent`` (containers only) and ``\\All`` (a view of
  mail that is in other folders, as Gmail's All Mail: importing it would
  store everything twice). Names are modified UTF-7 (RFC 3501 §5.1.3)
  with the server's hierarchy delimiter; ours is ``/`` (a ``/`` inside a
  name of a server whose delimiter is another becomes ``_``). The prefix
  of the personal namespace (RFC 2342), such as Courier's ``INBOX.``, is
  taken off: the old ``INBOX.Sent`` is our ``Sent``.
  Special-use attributes (RFC 6154) are kept so Sent goes to Sent.
- Each folder is opened with EXAMINE (read-only: nothing on the source
  changes, not even \\Seen), its UIDVALIDITY read, and the UIDs above the
  last one imported (under the same UIDVALIDITY) listed with their sizes;
  they are fetched in batches of at most ``BATCH`` messages or
  ``BATCH_OCTETS`` octets (one message larger than that alone), as
  ``UID FLAGS INTERNALDATE BODY.PEEK[]``: the exact octets, flags
  (keywords included; \\Recent is the server's, not the message's) and
  the internal date.
"""

from __future__ import annotations

import contextlib
import functools
import imaplib
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from relate.errors import RelateError
from relate.mail import mutf7

BATCH = 500
BATCH_OCTETS = 16 * 1024 * 1024
Security = Literal["tls", "starttls", "plain"]

_LIST = re.compile(rb'^\((?P<attrs>[^)]*)\) (?P<delim>NIL|"(?:\\.|[^"\\])*") ?(?P<name>.*)$', re.IGNORECASE)
_NAMESPACE = re.compile(rb'^\(\("((?:\\.|[^"\\])*)" ')
_UID = re.compile(rb"\bUID (\d+)", re.IGNORECASE)
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)", re.IGNORECASE)
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)", re.IGNORECASE)
_DATE = re.compile(rb'\bINTERNALDATE "([^"]+)"', re.IGNORECASE)
_BODY = "(UID FLAGS INTERNALDATE BODY.PEEK[])"
_SKIPPED = {b"\\noselect", b"\\nonexistent", b"\\all"}
_SPECIAL = {
    f"\\{name}".lower().encode(): f"\\{name}" for name in ("Sent", "Drafts", "Trash", "Junk", "Archive", "Flagged")
}


class SourceError(RelateError):
    """The source server could not be reached, refused us, or broke off (the text says which)."""


@dataclass(frozen=True)
class RemoteFolder:
    name: str  # ours: UTF-8, "/" between levels
    wire: bytes  # the name as the server spells it (quoted for commands)
    special_use: str | None


@dataclass(frozen=True)
class RemoteMessage:
    uid: int
    flags: tuple[str, ...]
    internal_date: datetime | None
    raw: bytes


def _quote(name: bytes) -> bytes:
    return b'"' + name.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _unquote(text: bytes) -> bytes:
    if text.startswith(b'"') and text.endswith(b'"') and len(text) >= 2:
        return re.sub(rb"\\(.)", rb"\1", text[1:-1])
    return text


def _decode(name: bytes) -> str:
    text = name.decode("utf-8", "replace")
    try:
        return mutf7.decode(text)
    except mutf7.InvalidName:
        return text  # a server that sends UTF-8 (or broken names): as it stands


def our_name(wire: bytes, delimiter: bytes | None, prefix: bytes = b"") -> str:
    """A server's folder name (modified UTF-7, its delimiter, below the personal namespace ``prefix``) as ours."""
    if prefix and wire.startswith(prefix) and len(wire) > len(prefix):
        wire = wire[len(prefix) :]
    if not delimiter or delimiter == b"/":
        name = _decode(wire)
    else:
        name = "/".join(_decode(part).replace("/", "_") for part in wire.split(delimiter))
    return "INBOX" if name.upper() == "INBOX" else name


def parse_list(lines: list[bytes | tuple[bytes, bytes]], prefix: bytes = b"") -> list[RemoteFolder]:
    """The folders in imaplib's LIST answer (a line each, or a tuple where the name came as a literal)."""
    found: list[RemoteFolder] = []
    for line in lines:
        if isinstance(line, tuple):
            head, wire = line[0].rsplit(b"{", 1)[0].rstrip() + b" ", line[1]
            m = _LIST.match(head)
        else:
            m = _LIST.match(line)
            wire = _unquote(m.group("name").strip()) if m else b""
        if m is None:
            continue
        attrs = {a.lower() for a in m.group("attrs").split()}
        if attrs & _SKIPPED or not wire:
            continue
        delim = m.group("delim")
        delimiter = None if delim.upper() == b"NIL" else _unquote(delim)
        special = next((_SPECIAL[a] for a in attrs if a in _SPECIAL), None)
        found.append(RemoteFolder(our_name(wire, delimiter, prefix), wire, special))
    return found


def _internal_date(text: bytes) -> datetime | None:
    try:
        return datetime.strptime(text.decode("ascii").strip(), "%d-%b-%Y %H:%M:%S %z")
    except (ValueError, UnicodeDecodeError):
        return None


class ImapSource:
    """One logged-in connection to the source server."""

    def __init__(self, host: str, port: int, security: Security, *, verify: bool = True, timeout: float = 60) -> None:
        self.label = f"{host}:{port}"
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            if security == "tls":
                self.client: imaplib.IMAP4 = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=timeout)
            else:
                self.client = imaplib.IMAP4(host, port, timeout=timeout)
                if security == "starttls":
                    self.client.starttls(context)
        except ssl.SSLError as exc:
            raise SourceError(f"TLS with the IMAP server {self.label} failed: {exc.reason or exc}") from None
        except (OSError, imaplib.IMAP4.error) as exc:
            raise SourceError(f"cannot reach the IMAP server {self.label}: {_reason(exc)}") from None

    def login(self, user: str, password: str) -> None:
        try:
            self.client.login(user, password)
        except imaplib.IMAP4.error as exc:
            raise SourceError(f"the IMAP server {self.label} refused the login of {user}: {_reason(exc)}") from None
        except OSError as exc:
            raise SourceError(f"the IMAP server {self.label} broke off during login: {_reason(exc)}") from None

    def _call(self, what: str, command: Callable[[], tuple[str, list[Any]]]) -> list[bytes | tuple[bytes, bytes]]:
        try:
            typ, data = command()
        except (OSError, imaplib.IMAP4.abort) as exc:
            raise SourceError(
                f"the IMAP server {self.label} broke off ({what}): {_reason(exc)}; "
                "run the same command again to go on where it stopped"
            ) from None
        except imaplib.IMAP4.error as exc:
            raise SourceError(f"the IMAP server {self.label} refused {what}: {_reason(exc)}") from None
        if typ != "OK":
            text = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
            raise SourceError(f"the IMAP server {self.label} refused {what}: {text}")
        return [d for d in data if d is not None]

    def personal_prefix(self) -> bytes:
        """The prefix of the first personal namespace (RFC 2342), b"" when none or NAMESPACE is unknown."""
        try:
            data = self._call("NAMESPACE", self.client.namespace)
        except SourceError:
            return b""
        m = _NAMESPACE.match(data[0]) if data and isinstance(data[0], bytes) else None
        return _unquote(b'"' + m.group(1) + b'"') if m else b""

    def folders(self) -> list[RemoteFolder]:
        prefix = self.personal_prefix()
        return parse_list(self._call("LIST", lambda: self.client.list('""', "*")), prefix)

    def examine(self, folder: RemoteFolder) -> tuple[int, int]:
        """Open ``folder`` read-only: (UIDVALIDITY, messages in it)."""
        wire = _quote(folder.wire).decode("latin-1")
        data = self._call(f"EXAMINE {folder.name}", lambda: self.client.select(wire, readonly=True))
        exists = int(data[0]) if data and isinstance(data[0], bytes) and data[0].isdigit() else 0
        _, validity = self.client.response("UIDVALIDITY")
        uidvalidity = int(validity[0]) if validity and validity[0] else 0
        return uidvalidity, exists

    def sizes(self, after_uid: int) -> list[tuple[int, int]]:
        """(UID, size) of each message of the open folder whose UID is above ``after_uid``."""
        data = self._call(
            "UID FETCH (RFC822.SIZE)", lambda: self.client.uid("FETCH", f"{after_uid + 1}:*", "(UID RFC822.SIZE)")
        )
        found = []
        for line in data:
            text = line[0] if isinstance(line, tuple) else line
            uid, size = _UID.search(text), _SIZE.search(text)
            if uid and size and int(uid.group(1)) > after_uid:
                found.append((int(uid.group(1)), int(size.group(1))))
        found.sort()
        return found

    def fetch(self, uids: list[tuple[int, int]]) -> Iterator[RemoteMessage]:
        """The messages of ``uids`` ((UID, size) pairs of :meth:`sizes`), in batches, in UID order."""
        start = 0
        while start < len(uids):
            end, octets = start, 0
            while end < len(uids) and end - start < BATCH and (end == start or octets + uids[end][1] <= BATCH_OCTETS):
                octets += uids[end][1]
                end += 1
            wanted = ",".join(str(uid) for uid, _ in uids[start:end])
            data = self._call("UID FETCH (BODY.PEEK[])", functools.partial(self.client.uid, "FETCH", wanted, _BODY))
            got = sorted(_messages(data), key=lambda m: m.uid)
            yield from got
            start = end

    def logout(self) -> None:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            self.client.logout()


def _messages(data: list[bytes | tuple[bytes, bytes]]) -> Iterator[RemoteMessage]:
    """imaplib's FETCH answer: a (text before the literal, the literal) tuple per message, then the rest of
    its text (``)`` or more items) as bytes."""
    pending: tuple[bytes, bytes] | None = None
    for item in [*data, None]:
        if isinstance(item, bytes) and pending is not None:
            pending = (pending[0] + b" " + item, pending[1])
            continue
        if pending is not None:
            text, raw = pending
            uid, flags, date = _UID.search(text), _FLAGS.search(text), _DATE.search(text)
            if uid is not None:
                names = (f.decode("utf-8", "replace") for f in (flags.group(1).split() if flags else []))
                kept = tuple(f for f in names if f.lower() != "\\recent")
                yield RemoteMessage(int(uid.group(1)), kept, _internal_date(date.group(1)) if date else None, raw)
            pending = None
        if isinstance(item, tuple):
            pending = item


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    text = str(exc.args[0] if exc.args else exc)
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text or type(exc).__name__
