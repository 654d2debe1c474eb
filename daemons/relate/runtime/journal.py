"""Log records as journal entries with fields, over journald's native protocol (no libsystemd).

Under systemd a daemon's stderr is a stream to journald, which keeps only the
text, the priority of a ``<N>`` prefix and the unit. Sent to journald's
datagram socket instead (``/run/systemd/journal/socket``), each record is an
entry with fields an admin can select on: ``PRIORITY``, ``SYSLOG_IDENTIFIER``
(``relate-smtp``), ``LOGGER`` (``relate.auth``), ``CODE_FILE``,
``CODE_LINE``, ``CODE_FUNC``, and the text in ``MESSAGE``, as systemd-python's
JournalHandler sends them, e.g. ``journalctl LOGGER=relate.auth``; journald
adds the unit, pid and user from the sender's credentials.

The wire format (systemd's "Native Journal Protocol"): one datagram per
entry, fields ``NAME=value\\n``; a value holding a newline is ``NAME\\n``, its
length as 64-bit little-endian, the value, ``\\n``. A datagram must fit the
socket's send buffer, so the message is cut at :data:`MAX_MESSAGE` bytes. A
record that cannot be sent (journald restarting) goes to stderr, which is
the journal's stream too, as a plain line.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import struct
import sys

SOCKET = "/run/systemd/journal/socket"
MAX_MESSAGE = 48 * 1024
SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def stderr_is_journal() -> bool:
    """True when stderr is the journal stream systemd connected (``$JOURNAL_STREAM`` = "device:inode")."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return bool(expected) and expected == f"{st.st_dev}:{st.st_ino}"


def native_available(path: str = SOCKET) -> bool:
    """journald's datagram socket is there, and stderr is its stream socket (not a file standing in for it)."""
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode) and stat.S_ISSOCK(os.fstat(sys.stderr.fileno()).st_mode)
    except (OSError, ValueError):
        return False


def encode(fields: dict[str, str]) -> bytes:
    """One native-protocol datagram from ``fields`` (names are upper-case ASCII)."""
    out = bytearray()
    for name, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Sends each record to journald as an entry with fields; falls back to a stderr line if it cannot."""

    def __init__(self, identifier: str, path: str = SOCKET) -> None:
        super().__init__()
        self.identifier = identifier
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            cut = message.encode("utf-8", "replace")[:MAX_MESSAGE].decode("utf-8", "ignore")
            fields = {
                "MESSAGE": cut,
                "PRIORITY": str(SYSLOG_PRIORITY.get(record.levelno, 6)),
                "SYSLOG_IDENTIFIER": self.identifier,
                "LOGGER": record.name,
                "CODE_FILE": record.pathname,
                "CODE_LINE": str(record.lineno),
                "CODE_FUNC": record.funcName or "",  # None for a record made by hand
            }
            try:
                self._sock.sendto(encode(fields), self.path)
            except OSError:
                prefix = f"<{fields['PRIORITY']}>"
                sys.stderr.write(prefix + f"{record.name}: {message}".replace("\n", "\n" + prefix) + "\n")
                sys.stderr.flush()
        except Exception:  # noqa: BLE001  # logging's own contract: a handler never raises into the caller
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()
