"""Secrets, files and the local database that `relatectl setup` (and the dev run) create once."""

from __future__ import annotations

import base64
import os
import pwd
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
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


# A PostgreSQL on this machine, as Debian's postgresql package runs it: the
# Unix socket in /var/run/postgresql, peer authentication (the database role
# is the connecting process's user name). `relatectl setup`, run as root with
# no database configured, creates a role and a database of the daemons' user
# there, so no password exists anywhere.
PG_SOCKET_DIR = Path("/var/run/postgresql")
LOCAL_ROLE = "relate"
LOCAL_DATABASE = "relate"


def local_postgres(socket_dir: Path = PG_SOCKET_DIR) -> bool:
    """Whether a PostgreSQL listens on the default Unix socket here."""
    return (socket_dir / ".s.PGSQL.5432").exists()


def local_dsn(socket_dir: Path = PG_SOCKET_DIR) -> str:
    """The DSN of the local database over the Unix socket (peer authentication)."""
    return f"postgresql://{LOCAL_ROLE}@/{LOCAL_DATABASE}?host={socket_dir}"


def peer_user(dsn: str | None) -> str | None:
    """The role a Unix-socket DSN logs in as, when peer authentication would check the OS user; else None."""
    if not dsn:
        return None
    parts = urlsplit(dsn)
    hosts = parse_qs(parts.query).get("host", [parts.hostname or ""])
    if not all(h == "" or h.startswith("/") for h in hosts):
        return None
    return unquote(parts.username) if parts.username else None


@contextmanager
def acting_as(user: str | None) -> Iterator[None]:
    """Run the block with ``user``'s effective uid and gid when root (else as is).

    PostgreSQL's peer authentication asks the kernel who opened the socket
    (SO_PEERCRED), which reports the effective ids at connect(): root can
    so log in as the daemons' role, or as postgres, without any password.
    Only connecting needs it; the connection stays usable afterwards.
    """
    if user is None or user == "root" or os.geteuid() != 0:
        yield
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        yield  # no such system user: connect as root and let PostgreSQL say no
        return
    home = os.environ.get("HOME")
    os.setegid(entry.pw_gid)
    os.seteuid(entry.pw_uid)
    os.environ["HOME"] = entry.pw_dir  # libpq-style files (~/.pgpass) of that user, not root's
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        if home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = home


async def create_local_database(socket_dir: Path = PG_SOCKET_DIR) -> list[str]:
    """Create the role and database of :func:`local_dsn` as postgres; return what was made (idempotent)."""
    with acting_as("postgres"):
        conn = await asyncpg.connect(host=str(socket_dir), user="postgres", database="postgres", timeout=10)
    made: list[str] = []
    try:
        if not await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", LOCAL_ROLE):
            await conn.execute(f'CREATE ROLE "{LOCAL_ROLE}" LOGIN')
            made.append(f"PostgreSQL role {LOCAL_ROLE}")
        if not await conn.fetchval("SELECT true FROM pg_database WHERE datname = $1", LOCAL_DATABASE):
            await conn.execute(
                f'CREATE DATABASE "{LOCAL_DATABASE}" OWNER "{LOCAL_ROLE}" ENCODING \'UTF8\' TEMPLATE template0'
            )
            made.append(f"PostgreSQL database {LOCAL_DATABASE}")
    finally:
        await conn.close()
    return made
