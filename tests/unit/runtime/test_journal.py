"""Journal entries over journald's native protocol, received on a real datagram socket standing in for journald."""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from relate.runtime import journal


def decode(datagram: bytes) -> dict[str, str]:
    """Fields of one native-protocol datagram, read as journald reads them."""
    fields: dict[str, str] = {}
    rest = datagram
    while rest:
        line, _, after = rest.partition(b"\n")
        if b"=" in line:
            name, _, value = line.partition(b"=")
            fields[name.decode()] = value.decode()
            rest = after
        else:
            (size,) = struct.unpack("<Q", after[:8])
            fields[line.decode()] = after[8 : 8 + size].decode()
            assert after[8 + size : 9 + size] == b"\n"
            rest = after[9 + size :]
    return fields


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def test_a_record_becomes_an_entry_with_priority_identifier_logger_and_code_location(
    journald: tuple[str, socket.socket],
) -> None:
    """A warning arrives as one entry: its text, PRIORITY=4, the daemon's identifier, the logger and the call site."""
    path, sock = journald
    handler = journal.JournalHandler("relate-imap", path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("relate.test.journal")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning('auth-failure service=imap client=%s user="%s"', "192.0.2.7", "bob@example.com")
    finally:
        logger.removeHandler(handler)
        handler.close()
    entry = decode(sock.recv(65536))
    assert entry["MESSAGE"] == 'auth-failure service=imap client=192.0.2.7 user="bob@example.com"'
    assert entry["PRIORITY"] == "4"
    assert entry["SYSLOG_IDENTIFIER"] == "relate-imap"
    assert entry["LOGGER"] == "relate.test.journal"
    assert entry["CODE_FILE"] == __file__
    assert entry["CODE_FUNC"] == "test_a_record_becomes_an_entry_with_priority_identifier_logger_and_code_location"
    assert int(entry["CODE_LINE"]) > 0


def test_a_multiline_message_is_one_entry_and_a_huge_one_is_cut(journald: tuple[str, socket.socket]) -> None:
    """A traceback stays one entry (length-prefixed value); a message past MAX_MESSAGE is cut, not dropped."""
    path, sock = journald
    handler = journal.JournalHandler("relate-smtp", path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    record = logging.LogRecord("relate.smtp", logging.ERROR, __file__, 1, "first\nsecond=line\n", None, None)
    handler.emit(record)
    huge = logging.LogRecord("relate.smtp", logging.INFO, __file__, 2, "é" * journal.MAX_MESSAGE, None, None)
    handler.emit(huge)
    handler.close()
    entry = decode(sock.recv(65536))
    assert entry["MESSAGE"] == "first\nsecond=line\n"
    assert entry["PRIORITY"] == "3"
    cut = decode(sock.recv(2 * journal.MAX_MESSAGE))
    assert cut["MESSAGE"] == "é" * (journal.MAX_MESSAGE // 2)
    assert cut["PRIORITY"] == "6"


def test_without_journald_the_record_goes_to_stderr_with_its_priority(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """journald's socket gone (restarting): the record is a <N>-prefixed stderr line, which the stream keeps."""
    handler = journal.JournalHandler("relate-pop3", str(tmp_path / "no-such-socket"))
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.emit(logging.LogRecord("relate.pop3", logging.WARNING, __file__, 1, "one\ntwo", None, None))
    handler.close()
    assert capsys.readouterr().err == "<4>relate.pop3: one\n<4>two\n"


def test_the_native_protocol_needs_journald_socket_and_a_stream_socket_on_stderr(
    journald: tuple[str, socket.socket], tmp_path: Path
) -> None:
    """With stderr a file (as a test's log standing in for the journal), daemons keep <N> lines on stderr."""
    path, _ = journald
    assert not journal.native_available(str(tmp_path / "missing"))
    with (tmp_path / "stderr.log").open("w") as log, pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stderr", log)
        assert not journal.native_available(path)
    left, right = socket.socketpair()
    with left, right, pytest.MonkeyPatch.context() as mp, left.makefile("w") as stream:
        mp.setattr("sys.stderr", stream)
        assert journal.native_available(path)
