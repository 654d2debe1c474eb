"""TLS material: server contexts (TLS 1.2 and newer) and self-signed certificates."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context refusing anything older than TLS 1.2; raises on a bad pair."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def make_self_signed(cert_path: Path, key_path: Path, hostname: str, *, days: int = 825) -> None:
    """Write a self-signed ECDSA P-256 certificate for ``hostname`` (and localhost).

    The key file is created 0600 before anything is written to it.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    names: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        names.append(x509.DNSName("localhost"))
    names += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    issuer: str
    names: list[str]
    not_before: dt.datetime
    not_after: dt.datetime


def certificate_summary(cert_path: Path) -> CertificateInfo:
    """Subject, names, issuer and validity of the first certificate in a PEM file; raises on a bad file."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n.value) for n in san]
    except x509.ExtensionNotFound:
        names = []
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        names=names,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


class ReloadableTLS:
    """A server context whose certificate can be replaced without a restart.

    Listeners are created once with :attr:`context`; its SNI callback, which
    OpenSSL runs on every ClientHello (with or without SNI), hands each new
    handshake the most recently loaded context. Live connections keep theirs.
    """

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key
        self._current = server_context(cert, key)
        self.loaded_at = dt.datetime.now(dt.UTC)
        self.not_after: dt.datetime | None = None
        self.context = server_context(cert, key)
        self.context.sni_callback = self._pick

    def _pick(self, sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = self._current

    def reload(self) -> None:
        """Load the files again; on any error the old certificate stays and the error is raised.

        Checked before the swap: the certificate parses, its key matches it
        (OpenSSL's own check), and it is valid now; an expired or not yet
        valid certificate would only turn working clients away.
        """
        fresh = server_context(self.cert, self.key)
        info = certificate_summary(self.cert)
        now = dt.datetime.now(dt.UTC)
        not_before, not_after = info.not_before, info.not_after
        if not_after <= now:
            raise ValueError(f"the new certificate expired on {not_after:%Y-%m-%d %H:%M} UTC")
        if not_before > now:
            raise ValueError(f"the new certificate is not valid before {not_before:%Y-%m-%d %H:%M} UTC")
        self._current = fresh
        self.loaded_at = now
        self.not_after = not_after


class TLSRegistry:
    """The certificates a daemon's listeners use, loaded once per (cert, key) pair."""

    def __init__(self, default_cert: Path | None, default_key: Path | None) -> None:
        self.default = (default_cert, default_key)
        self._pairs: dict[tuple[Path, Path], ReloadableTLS] = {}

    def for_listener(self, where: str, cert: Path | None, key: Path | None, *, required: bool) -> ReloadableTLS | None:
        """The listener's own pair, else the default; None if neither is set and TLS is optional."""
        cert, key = (cert, key) if cert is not None else self.default
        if cert is None or key is None:
            if required:
                raise ValueError(f"{where}: needs a certificate (tls.cert and tls.key, or {where}.cert and .key)")
            return None
        pair = (cert, key)
        if pair not in self._pairs:
            try:
                self._pairs[pair] = ReloadableTLS(cert, key)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"{where}: cannot load certificate {cert} with key {key}: {exc}") from None
        return self._pairs[pair]

    def reload(self, log: logging.Logger) -> None:
        """Re-read every pair; one that fails keeps its old certificate, and the log says why."""
        for tls in self._pairs.values():
            try:
                tls.reload()
                expiry = f"{tls.not_after:%Y-%m-%d}" if tls.not_after else "-"
                log.info("tls-reloaded cert=%s expires=%s", tls.cert, expiry)
            except (OSError, ValueError) as exc:
                log.error("tls-reload-failed cert=%s error=%s (keeping the previous certificate)", tls.cert, exc)
