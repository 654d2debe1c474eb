"""DKIM (RFC 6376) keys and signatures, with RSA-SHA256 or Ed25519-SHA256 (RFC 8463).

Keys are made here with ``cryptography`` and kept in the database
(``dkim_keys``); signing is dkimpy's. Signatures use relaxed/simple
canonicalization and cover the headers RFC 6376 §5.4.1 recommends, each
listed once more than it occurs so that none can be added after signing.

A signature covers bytes, so it must be computed over exactly the bytes the
SMTP client puts on the wire: lines ending in CRLF, a bare CR or LF nowhere
(an SMTP client turns them into CRLF, and the receiver's body hash would no
longer match). :func:`sign` refuses anything else; the delivery daemon signs
the wire form (``relate.queue.client.wire_form``) and sends it unchanged.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

ALGORITHMS = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}
SIGNED_HEADERS = [
    b"from", b"sender", b"reply-to", b"subject", b"date", b"message-id", b"to", b"cc",
    b"mime-version", b"content-type", b"content-transfer-encoding", b"in-reply-to", b"references",
]  # fmt: skip


KEY_FIELDS = ("selector", "algorithm", "private_key", "public_key")


@dataclass(frozen=True)
class DkimKey:
    selector: str
    algorithm: str  # rsa-sha256 | ed25519-sha256
    private_key: str  # PKCS#1 PEM (RSA) or base64 seed (Ed25519), as dkimpy takes them
    public_key: str  # the p= of the DNS record

    def txt_record(self) -> str:
        kind = "rsa" if self.algorithm == "rsa-sha256" else "ed25519"
        return f"v=DKIM1; k={kind}; p={self.public_key}"


def generate(selector: str, kind: str = "rsa", bits: int = 2048) -> DkimKey:
    """A new key pair; ``kind`` is ``rsa`` (2048 bits by default) or ``ed25519``."""
    if kind == "ed25519":
        ed = ed25519.Ed25519PrivateKey.generate()
        seed = ed.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        public = ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return DkimKey(selector, ALGORITHMS[kind], base64.b64encode(seed).decode(), base64.b64encode(public).decode())
    if kind != "rsa":
        raise ValueError(f"unknown DKIM key type {kind!r}: rsa or ed25519")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return DkimKey(selector, ALGORITHMS[kind], pem.decode(), base64.b64encode(der).decode())


def sign(message: bytes, domain: str, key: DkimKey) -> bytes:
    """The ``DKIM-Signature:`` header (with CRLF) to prepend to ``message``, whose lines must all end in CRLF."""
    crlf = message.count(b"\r\n")
    if not (crlf == message.count(b"\r") == message.count(b"\n")) or not message.endswith(b"\r\n"):
        raise ValueError("DKIM signs the wire form only: every line ending CRLF, no bare CR or LF")
    present = {line.split(b":", 1)[0].strip().lower() for line in _header_lines(message)}
    include = [h for h in SIGNED_HEADERS if h in present] or [b"from"]
    signature: bytes = dkim.sign(
        message,
        key.selector.encode(),
        domain.encode(),
        key.private_key.encode(),
        canonicalize=(b"relaxed", b"simple"),
        signature_algorithm=key.algorithm.encode(),
        include_headers=include + include,  # each once more: no header can be added unseen
        linesep=b"\r\n",
    )
    return signature


def _header_lines(message: bytes) -> list[bytes]:
    head = message.split(b"\r\n\r\n", 1)[0]
    return [line for line in head.split(b"\r\n") if line and line[:1] not in (b" ", b"\t")]
