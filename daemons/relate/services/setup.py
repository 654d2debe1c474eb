"""Secrets and files `relatectl setup` and the dev run create once."""

from __future__ import annotations

import base64
import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def new_internal_key() -> str:
    """The key daemons present to the API's internal endpoints."""
    return "relate_internal_" + secrets.token_urlsafe(32)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_vapid_keys() -> tuple[str, str]:
    """(public, private) VAPID keys for web push (RFC 8292), base64url.

    The public key is the uncompressed P-256 point browsers take as
    ``applicationServerKey``; the private key is the raw 32-byte scalar.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    private = key.private_numbers().private_value.to_bytes(32, "big")
    return _b64url(public), _b64url(private)
