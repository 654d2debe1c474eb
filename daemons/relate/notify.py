"""Telling the API that new mail was stored, without ever waiting on it.

Policy: after a commit, a daemon posts ``{mailboxId, emailId, from,
subject}`` to ``POST /api/internal-notifications`` with the internal key, on
the API's Unix socket (``internal.api_socket``) or, when set,
``internal.api_url``. The post runs as a background task with a short
timeout (``internal.notify_timeout``); failure is logged at most once a
minute and never affects the mail, which is already committed. IMAP
sessions do not depend on this: they hear of changes through PostgreSQL.
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


class Notifier:
    def __init__(self, cfg: InternalConfig) -> None:
        self._cfg = cfg
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_warning = 0.0

    def new_email(self, *, mailbox_id: int, email_id: int, sender: str | None, subject: str | None) -> None:
        """Schedule one notification; returns at once."""
        if not self._cfg.api_key:
            return
        body = {"mailboxId": mailbox_id, "emailId": email_id, "from": sender, "subject": subject}
        task = asyncio.get_running_loop().create_task(self._post(body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for notifications in flight (at shutdown; each is bounded by the timeout)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _post(self, body: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(self._send(json.dumps(body).encode()), self._cfg.notify_timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            now = time.monotonic()
            if now - self._last_warning > 60:
                self._last_warning = now
                target = self._cfg.api_url or self._cfg.api_socket
                log.warning("notify-failed target=%s error=%s", target, type(exc).__name__)

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
