"""A real rspamd (Debian's package) on loopback with a minimal configuration of its own, for the tests and bench/.

Two workers: ``normal`` (``/checkv2``) and ``controller`` (``/learnspam``,
``/learnham``, ``/stat``, trusted from 127.0.0.1 without a password), each
on a free loopback port. No redis: GTUBE is rspamd's core, and the Bayes
classifier keeps its statistics in sqlite3 files in the test's directory.
Three rules of the test's own give the other actions: a Subject containing
``cheap pills`` scores 8 (``add header``, at 6), ``maybe later`` 4.5
(``greylist``, at 4), ``act now`` 11 (``rewrite subject``, at 10, with
rspamd's ``***SPAM*** %s``). DNS goes to a discard port, so nothing leaves the machine
(rspamd's stock configuration would ask public DNS blocklists).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

RULES = """
local function subject_has(text)
  return function(task)
    local s = task:get_subject()
    return s ~= nil and s:find(text, 1, true) ~= nil
  end
end
rspamd_config:register_symbol({name = 'RELATE_TEST_SPAMMY', score = 8.0, callback = subject_has('cheap pills')})
rspamd_config:register_symbol({name = 'RELATE_TEST_DOUBTFUL', score = 4.5, callback = subject_has('maybe later')})
rspamd_config:register_symbol({name = 'RELATE_TEST_PUSHY', score = 11.0, callback = subject_has('act now')})
"""

CONFIG = """
options {{
  pidfile = "{dir}/rspamd.pid";
  dns {{ nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 1; }}
}}
logging {{ type = "file"; filename = "{dir}/rspamd.log"; level = "info"; }}
worker "normal" {{ bind_socket = "127.0.0.1:{normal}"; count = {workers}; }}
worker "controller" {{ bind_socket = "127.0.0.1:{controller}"; count = 1; secure_ip = "127.0.0.1"; }}
classifier "bayes" {{
  backend = "sqlite3";
  tokenizer {{ name = "osb"; }}
  min_learns = 1;
  statfile {{ symbol = "BAYES_HAM"; path = "{dir}/bayes.ham.sqlite"; spam = false; }}
  statfile {{ symbol = "BAYES_SPAM"; path = "{dir}/bayes.spam.sqlite"; spam = true; }}
}}
actions {{ reject = 15; rewrite_subject = 10; add_header = 6; greylist = 4; subject = "***SPAM*** %s"; }}
lua = "{dir}/rules.lua";
"""


def free_port() -> int:
    """A loopback port the kernel just handed out (rspamd cannot bind port 0 and say which it got)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RspamdServer:
    """rspamd started in ``directory``; ``url`` and ``controller_url`` for relate's configuration."""

    def __init__(self, directory: Path, binary: str = "rspamd", *, workers: int = 1) -> None:
        self.binary = binary
        self.workers = workers  # normal worker processes (rspamd's default: one per core)
        self.directory = directory
        self.normal = free_port()
        self.controller = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.normal}"

    @property
    def controller_url(self) -> str:
        return f"http://127.0.0.1:{self.controller}"

    def start(self, wait: float = 60.0) -> None:
        """Start rspamd and wait for both workers. Its controller and normal worker open the Bayes sqlite
        files at once, and on a first start one of them may find the other creating them and give up on
        that statfile for its whole life (``cannot init backend sqlite3``: every lesson then fails with
        "cannot find statfile backend"); rspamd is then started again, on the files now made."""
        problem = ""
        for _ in range(3):
            self._start(wait)
            if "cannot init backend" not in self.log():
                return
            problem = self.log()[-2000:]
            self.stop()
            (self.directory / "rspamd.log").unlink(missing_ok=True)
        raise RuntimeError(f"rspamd cannot open its Bayes statistics: {problem}")

    def _start(self, wait: float) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "rules.lua").write_text(RULES)
        conf = self.directory / "rspamd.conf"
        conf.write_text(
            CONFIG.format(dir=self.directory, normal=self.normal, controller=self.controller, workers=self.workers)
        )
        # -f: stay in the foreground (a child of the test). As root (CI, a container), -i lets its workers
        # run as root rather than ask for a -u user.
        command = [self.binary, "-c", str(conf), "-f", *(["-i"] if os.getuid() == 0 else [])]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603 - our own argv
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rspamd exited with {self.process.returncode}: {self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=1) as r1:  # noqa: S310 - loopback
                    r1.read()
                self.stat()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"rspamd did not answer within {wait} s: {self.log()[-2000:]}")

    def stat(self) -> dict[str, object]:
        """The controller's ``/stat``: counters of scans and lessons."""
        with urllib.request.urlopen(self.controller_url + "/stat", timeout=5) as response:  # noqa: S310 - loopback
            found: dict[str, object] = json.loads(response.read())
            return found

    def learns(self) -> int:
        """Lessons rspamd has taken in (``/stat``'s ``learned``)."""
        value = self.stat().get("learned", 0)
        assert isinstance(value, int)
        return value

    def log(self) -> str:
        path = self.directory / "rspamd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
