"""Telling the API that new mail was stored, without ever waiting on it.

Policy: after a commit, a daemon posts ``{mailboxId, emailId, from,
subject}`` to ``POST /api/internal-notifications`` with the internal key, on
the API's Unix socket (``internal.api_socket``) or, when set,
``internal.api_url``. The post runs as a background task with a short
timeout (``internal.notify_timeout``); failure is logged at most once a
minute and never affects the mail, which is already committed. IMAP
sessions do not depend on this: they hear of changes through PostgreSQL.

One post at a time: notifications made while a post is in flight (or in
the same turn of the event loop: the messages of one group commit) wait and
go together in the next, as ``{"notifications": [...]}`` (at most
``MAX_BATCH``); a lone one goes as itself. So the API handles one request
and one query per batch, not per message. At most ``MAX_PENDING`` wait: past
that (an API that hangs while mail pours in) the oldest are dropped, logged
like a failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from relate.config import InternalConfig

log = logging.getLogger("relate.notify")

PATH = "/api/internal-notifications"


MAX_BATCH = 500
MAX_PENDING = 10_000


class Notifier:
    def __init__(self, cfg: InternalConfig) -> None:
        self._cfg = cfg
        self._pending: list[dict[str, Any]] = []
        self._sender: asyncio.Task[None] | None = None
        self._last_warning = 0.0

    def new_email(self, *, mailbox_id: int, email_id: int, sender: str | None, subject: str | None) -> None:
        """Schedule one notification; returns at once."""
        if not self._cfg.api_key:
            return
        self._pending.append({"mailboxId": mailbox_id, "emailId": email_id, "from": sender, "subject": subject})
        if len(self._pending) > MAX_PENDING:
            dropped = len(self._pending) - MAX_PENDING
            del self._pending[:dropped]
            self._warn(f"dropped={dropped} (too many waiting)")
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_pending())

    async def drain(self) -> None:
        """Wait for notifications waiting or in flight (at shutdown; each post is bounded by the timeout)."""
        while self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)

    async def _send_pending(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                await self._post(batch[0] if len(batch) == 1 else {"notifications": batch})
        finally:
            self._sender = None

    def _warn(self, problem: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 60:
            self._last_warning = now
            target = self._cfg.api_url or self._cfg.api_socket
            log.warning("notify-failed target=%s %s", target, problem)

    async def _post(self, body: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(self._send(json.dumps(body).encode()), self._cfg.notify_timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            self._warn(f"error={type(exc).__name__}")

    async def _send(self, payload: bytes) -> None:
        if self._cfg.api_url:
            url = urlsplit(self._cfg.api_url)
            if url.scheme not in ("http", "https"):
                raise ValueError(f"unsupported scheme {url.scheme}")
            port = url.port or (443 if url.scheme == "https" else 80)
            reader, writer = await asyncio.open_connection(url.hostname, port, ssl=url.scheme == "https" or None)
            host = url.netloc
            path = url.path.rstrip("/") + PATH
        else:
            reader, writer = await asyncio.open_unix_connection(str(self._cfg.api_socket))
            host, path = "localhost", PATH
        try:
            writer.write(
                (
                    f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
                    f"Authorization: Bearer {self._cfg.api_key}\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
                ).encode()
                + payload
            )
            await writer.drain()
            status_line = await reader.readline()
            parts = status_line.split()
            if len(parts) < 2 or not parts[1].startswith(b"2"):
                raise ValueError(f"API answered {status_line[:60]!r}")
        finally:
            writer.close()
