"""Listening sockets handed over by systemd (socket activation, sd_listen_fds(3)).

systemd passes sockets as file descriptors 3, 4, ... and says so in
``LISTEN_PID`` (must be this process), ``LISTEN_FDS`` (how many) and
``LISTEN_FDNAMES`` (the ``FileDescriptorName=`` of each, colon-separated),
which tell a daemon which socket plays which role. Without them a daemon
binds the addresses in its config itself.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, MutableMapping
from ssl import SSLContext
from typing import Any

from relate.config import parse_listen

SD_LISTEN_FDS_START = 3


_SMTP_ROLES = ("mx", "submission", "submissions")


def socket_unit(role: str) -> str:
    """The systemd .socket unit that passes a role's socket (systemd/ in the source tree)."""
    return f"relate-smtp-{role}.socket" if role in _SMTP_ROLES else f"relate-{role}.socket"


def inherited_sockets(environ: MutableMapping[str, str] | None = None) -> dict[str, list[socket.socket]] | None:
    """Sockets by name when socket-activated, else None. The variables are removed, as sd_listen_fds does."""
    env = os.environ if environ is None else environ
    if env.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = int(env.get("LISTEN_FDS", "0") or "0")
    names = env.get("LISTEN_FDNAMES", "").split(":")
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(var, None)
    found: dict[str, list[socket.socket]] = {}
    for i in range(count):
        sock = socket.socket(fileno=SD_LISTEN_FDS_START + i)
        sock.setblocking(False)
        name = names[i] if i < len(names) and names[i] else "unknown"
        found.setdefault(name, []).append(sock)
    return found


async def open_servers(
    factory: Callable[[], asyncio.BaseProtocol],
    addresses: list[str],
    inherited: list[socket.socket] | None,
    ssl: SSLContext | None,
    *,
    handshake_timeout: float = 30.0,
    start_serving: bool = True,
) -> list[asyncio.Server]:
    """Serve on the sockets systemd passed when there are any, else bind ``host:port`` items.

    On implicit-TLS listeners a client must finish the handshake within
    ``handshake_timeout`` seconds; a silent one is dropped. With
    ``start_serving`` false the sockets listen (clients queue in the backlog)
    but nothing is accepted until each server's ``start_serving()``.
    """
    loop = asyncio.get_running_loop()
    tls_args: dict[str, Any] = {"ssl": ssl, "ssl_handshake_timeout": handshake_timeout} if ssl else {}
    if inherited is not None:
        return [
            await loop.create_server(factory, sock=sock, start_serving=start_serving, **tls_args) for sock in inherited
        ]
    servers = []
    for item in addresses:
        host, port = parse_listen(item)
        server = await loop.create_server(
            factory, host, port, reuse_address=True, start_serving=start_serving, **tls_args
        )
        servers.append(server)
    return servers


def bound(servers: list[asyncio.Server]) -> list[tuple[str, int]]:
    """(host, port) of every socket the servers listen on."""
    return [sock.getsockname()[:2] for server in servers for sock in server.sockets]
