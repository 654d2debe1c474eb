"""A TLS handshake that fails or is abandoned costs one log line, never a traceback, on every port."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import warnings

import pytest

from .conftest import Smtp
from .helpers import Client, assert_serves, wait_until

# The first bytes of a TLS 1.2 ClientHello record, cut short.
PARTIAL_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(20)


def tls_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("smtp-tls-failed")]


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert "Traceback" not in record.getMessage()
        assert record.name != "asyncio", record.getMessage()


async def starttls_then(smtp: Smtp, port: int, action: str) -> None:
    """STARTTLS on ``port``, then abandon the handshake: ``reset`` (RST mid-hello), ``close`` or ``garbage``."""
    client = await Client.connect(port)
    await client.ehlo()
    assert (await client.cmd("STARTTLS")).head == "220"
    await client.write(PARTIAL_HELLO if action != "garbage" else b"EHLO not-tls\r\n" * 20)
    await asyncio.sleep(0.05)
    if action == "reset":
        sock = client.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.writer.transport.abort()
    elif action == "close":
        client.writer.close()
    else:
        assert await client.closed()
    await client.close()


@pytest.mark.parametrize("action", ["reset", "close", "garbage"])
async def test_abandoned_starttls_logs_one_line(smtp: Smtp, caplog: pytest.LogCaptureFixture, action: str) -> None:
    """On 587 and 25, a handshake reset, closed or answered with plain text logs one smtp-tls-failed line each."""
    caplog.set_level(logging.DEBUG)
    await starttls_then(smtp, smtp.submission, action)
    await starttls_then(smtp, smtp.mx, action)
    assert await wait_until(lambda: len(tls_lines(caplog)) >= 2 and not smtp.server.sessions)
    await asyncio.sleep(0.1)
    lines = tls_lines(caplog)
    assert [line.split()[1:3] for line in lines] == [
        ["client=127.0.0.1", "role=submission"],
        ["client=127.0.0.1", "role=mx"],
    ], lines
    assert all(" error=" in line for line in lines)
    assert_no_traceback(caplog)
    await assert_serves(smtp)


@pytest.mark.parametrize("action", ["reset", "close", "garbage"])
async def test_failed_implicit_tls_logs_one_line(smtp: Smtp, caplog: pytest.LogCaptureFixture, action: str) -> None:
    """On 465, a handshake reset, closed or answered with plain text logs one smtp-tls-failed line, then 465 serves."""
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection("127.0.0.1", smtp.submissions)
    writer.write(PARTIAL_HELLO if action != "garbage" else b"EHLO plain-text\r\n")
    await writer.drain()
    await asyncio.sleep(0.05)
    if action == "reset":
        writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        writer.transport.abort()
    elif action == "close":
        writer.close()
    else:
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    assert await wait_until(lambda: len(tls_lines(caplog)) >= 1)
    await asyncio.sleep(0.1)
    lines = tls_lines(caplog)
    assert [line.split()[1:3] for line in lines] == [["client=127.0.0.1", "role=submissions"]], lines
    assert_no_traceback(caplog)
    client = await Client.connect(smtp.submissions, tls=smtp.client_tls)
    assert (await client.ehlo()).code == 250


async def test_refused_tls_version_logs_one_line(smtp: Smtp, caplog: pytest.LogCaptureFixture) -> None:
    """A client offering only TLS 1.1 (below the 1.2 minimum) is refused with one smtp-tls-failed line on 465."""
    caplog.set_level(logging.DEBUG)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated on purpose: that is the test
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await Client.connect(smtp.submissions, tls=old)
    assert await wait_until(lambda: len(tls_lines(caplog)) >= 1)
    assert_no_traceback(caplog)
