"""sd_notify's BARRIER=1 (what a disabled daemon waits on before it exits 0): it returns once the manager has
read the messages sent before it, and not before."""

from __future__ import annotations

import array
import socket
import threading
import time
from pathlib import Path

from relate.runtime.sdnotify import SystemdNotifier


def test_barrier_returns_once_the_manager_has_read_what_came_before(tmp_path: Path) -> None:
    """The manager gets READY=1, then BARRIER=1 with a file descriptor; the barrier holds until it closes it."""
    path = tmp_path / "notify.sock"
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(path))
    seen: list[bytes] = []
    closing = threading.Event()

    def serve() -> None:
        for _ in range(2):
            data, ancillary, _, _ = manager.recvmsg(4096, socket.CMSG_SPACE(4))
            seen.append(data)
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    (fd,) = array.array("i", payload)
                    time.sleep(0.3)  # hold it a while: the barrier must wait meanwhile
                    closing.set()
                    socket.close(fd)

    thread = threading.Thread(target=serve)
    thread.start()
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
    try:
        notifier.ready("ready")
        assert notifier.barrier(timeout=5)
        assert closing.is_set(), "the barrier returned before the manager closed its descriptor"
        thread.join(5)
        assert seen[0].startswith(b"READY=1")
        assert seen[1] == b"BARRIER=1"
    finally:
        notifier.close()
        manager.close()


def test_barrier_gives_up_when_nobody_reads(tmp_path: Path) -> None:
    """A manager that never reads: the barrier returns False after its timeout; without a manager at once."""
    path = tmp_path / "notify.sock"
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(path))
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
    try:
        assert notifier.barrier(timeout=0.2) is False
    finally:
        notifier.close()
        manager.close()
    assert SystemdNotifier({}).barrier() is False
