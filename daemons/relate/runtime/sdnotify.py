"""Telling the service manager how a daemon is doing (sd_notify(3)), without libsystemd.

systemd gives a ``Type=notify`` service the path of a datagram socket in
``$NOTIFY_SOCKET`` (a leading ``@`` means the Linux abstract namespace); each
datagram is newline-separated ``KEY=value`` lines. A daemon sends
``READY=1`` once it serves (here: the pool is open and the schema checked,
the listeners are up), ``STATUS=...`` whenever there is something to show in
``systemctl status``, ``WATCHDOG=1`` at least every ``$WATCHDOG_USEC``
microseconds (only when ``$WATCHDOG_PID`` is unset or this process), and
``STOPPING=1`` when it begins to shut down.

Without ``$NOTIFY_SOCKET`` (the dev run, another init system) every call does
nothing. A failed send is logged once and never stops the daemon: the
service manager's view is advisory, mail is not.
"""

from __future__ import annotations

import array
import logging
import os
import select
import socket
from collections.abc import Mapping

log = logging.getLogger("relate.runtime")


class SystemdNotifier:
    """Sends sd_notify datagrams to ``$NOTIFY_SOCKET``; a no-op without one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if path.startswith("@"):
            self._address = b"\0" + path[1:].encode()  # abstract namespace
        elif path.startswith("/"):
            self._address = path
        self._sock: socket.socket | None = None
        self._warned = False
        self.watchdog_seconds = _watchdog_seconds(env)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines (``ready=1`` becomes ``READY=1``); True when the datagram went out."""
        if self._address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._warned:
                log.warning("sd-notify-failed socket=%s error=%s", os.environ.get("NOTIFY_SOCKET", "-"), exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> None:
        self.send(ready=1, status=status, mainpid=os.getpid())

    def status(self, text: str) -> None:
        self.send(status=text)

    def watchdog(self) -> None:
        self.send(watchdog=1)

    def stopping(self, status: str = "stopping") -> None:
        self.send(stopping=1, status=status)

    def barrier(self, timeout: float = 5.0) -> bool:
        """Wait until the service manager has read every message sent before (``BARRIER=1``, systemd 246+,
        as sd_notify_barrier(3)): a process about to exit must not race its last words. True when it did
        within ``timeout``; False without a manager, on a send failure or past the timeout."""
        if self._address is None:
            return False
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendmsg(
                    [b"BARRIER=1"],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [write_end]))],
                    0,
                    self._address,
                )
            except OSError:
                return False
            os.close(write_end)
            write_end = -1
            # The manager closes its copy of the write end once it has read the message: then the pipe hangs up.
            poller = select.poll()
            poller.register(read_end, select.POLLHUP)
            return bool(poller.poll(int(timeout * 1000)))
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    """Seconds between keep-alives (half of ``$WATCHDOG_USEC``), or None when no watchdog is asked for."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (a parent that exec'd us without clearing it)
    try:
        usec = int(env.get("WATCHDOG_USEC", "0") or "0")
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None
