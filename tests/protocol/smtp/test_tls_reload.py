"""Certificate reload (SIGHUP / `relatectl tls reload`): new connections get the new certificate."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from relate.runtime.tls import make_self_signed

from .conftest import Smtp


def served_name(port: int, client_tls: ssl.SSLContext, *, implicit: bool) -> str:
    """The common name of the certificate a new connection is given."""
    if implicit:
        conn: smtplib.SMTP = smtplib.SMTP_SSL("127.0.0.1", port, context=client_tls, timeout=10)
    else:
        conn = smtplib.SMTP("127.0.0.1", port, timeout=10)
        conn.starttls(context=client_tls)
    with conn:
        assert isinstance(conn.sock, ssl.SSLSocket)
        der = conn.sock.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


async def test_reload_swaps_certificate_for_new_connections(smtp: Smtp, tls_files: tuple[Path, Path]) -> None:
    """After a reload, STARTTLS and implicit TLS serve the new certificate; a live session carries on."""
    assert await asyncio.to_thread(served_name, smtp.submissions, smtp.client_tls, implicit=True) == "mail.example.com"
    live = await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", smtp.submission, timeout=10)
    await asyncio.to_thread(live.starttls, context=smtp.client_tls)
    make_self_signed(*tls_files, "renewed.example.com")
    smtp.server.reload_tls()
    assert await asyncio.to_thread(served_name, smtp.submissions, smtp.client_tls, implicit=True) == (
        "renewed.example.com"
    )
    assert await asyncio.to_thread(served_name, smtp.submission, smtp.client_tls, implicit=False) == (
        "renewed.example.com"
    )
    code, _ = await asyncio.to_thread(live.noop)
    assert code == 250
    await asyncio.to_thread(live.quit)


async def test_bad_new_certificate_keeps_the_old_one(
    smtp: Smtp, tls_files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A broken certificate file on reload is refused with one log line, and the old one stays in use."""
    cert, _ = tls_files
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    with caplog.at_level(logging.ERROR, logger="relate.smtp"):
        smtp.server.reload_tls()
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("tls-reload-failed")]
    assert str(cert) in line
    assert "keeping the previous certificate" in line
    assert await asyncio.to_thread(served_name, smtp.submissions, smtp.client_tls, implicit=True) == "mail.example.com"
