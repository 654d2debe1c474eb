"""A throwaway Dovecot IMAP server on a loopback port, for the import tests and bench/import.py.

Set up as shared/peers.md describes the project's Dovecot peer (Maildir,
a static passdb: any user, one password), cut down to IMAP only, on one
loopback port chosen by binding port 0, in a temporary directory of its own
that :meth:`ThrowawayDovecot.stop` removes. Dovecot is Debian's
``dovecot-imapd`` (``scripts/test-deps`` installs it); its master process
must start as root (it switches to the mail user per login), so
:class:`Unavailable` says why when it cannot run here.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from relate.runtime.tls import make_self_signed
from relate.testing.rspamd import free_port

PASSWORD = "pass"  # noqa: S105 - every user's password on this loopback-only test server (peers.md)


class Unavailable(Exception):
    """Dovecot cannot run here (the text says why)."""


class ThrowawayDovecot:
    """``start()`` it, log in as any user with :data:`PASSWORD`, ``stop()`` it.

    ``separator`` is the IMAP hierarchy delimiter of its one namespace (on
    disk Maildir++ always uses ``.``); ``sent`` names the folder marked
    ``\\Sent``. With ``tls`` it also offers STARTTLS and listens for
    implicit TLS on ``tls_port``, with a self-signed certificate. ``prefix``
    is the namespace's (Courier's layout: ``INBOX.``, every folder below INBOX).
    """

    def __init__(self, *, separator: str = ".", sent: str = "Sent", tls: bool = False, prefix: str = "") -> None:
        self.binary = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)
        if self.binary is None:
            raise Unavailable("dovecot is not installed (Debian's dovecot-imapd; scripts/test-deps installs it)")
        if os.geteuid() != 0:
            raise Unavailable("Dovecot's master process must start as root")
        for name in ("dovecot", "dovenull"):
            try:
                pwd.getpwnam(name)
            except KeyError:
                raise Unavailable(f"the system user {name} is missing (dovecot-core creates it)") from None
        self.mail_user = pwd.getpwnam("vmail") if _has_user("vmail") else pwd.getpwnam("nobody")
        self.separator = separator
        self.sent = sent
        self.port = 0
        self.tls = tls
        self.prefix = prefix
        self.tls_port = 0
        self.dir = Path(tempfile.mkdtemp(prefix="relate-dovecot-"))
        self.dir.chmod(0o755)  # the mail user must reach its home below it
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.dir / "dovecot.conf"

    def home(self, user: str) -> Path:
        return self.dir / "home" / user

    def maildir(self, user: str) -> Path:
        """Where Dovecot keeps ``user``'s mail (Maildir++), once the user has logged in or been written to."""
        return self.home(user) / "Maildir"

    def _write_config(self) -> None:
        d = self.dir
        for sub in ("run", "state", "log", "home"):
            (d / sub).mkdir(exist_ok=True)
        os.chown(d / "home", self.mail_user.pw_uid, self.mail_user.pw_gid)
        ssl = "ssl = no"
        if self.tls:
            make_self_signed(d / "cert.pem", d / "key.pem", "localhost")
            ssl = f"ssl = yes\nssl_cert = <{d}/cert.pem\nssl_key = <{d}/key.pem"
        self.config.write_text(
            f"""# Throwaway Dovecot for Relate Mail's import tests (relate/testing/dovecot.py); loopback IMAP only.
instance_name = relate-test-{self.port}
base_dir = {d}/run
state_dir = {d}/state
protocols = imap
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {d}/log/dovecot.log
info_log_path = {d}/log/dovecot-info.log
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = {self.mail_user.pw_uid}
mail_location = maildir:~/Maildir
mail_max_userip_connections = 100
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={self.mail_user.pw_uid} gid={self.mail_user.pw_gid} home={d}/home/%u
}}
namespace inbox {{
  inbox = yes
  separator = {self.separator}
  prefix = {self.prefix}
  mailbox "{self.sent}" {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
  }}
}}
"""
        )

    def start(self, timeout: float = 30.0) -> int:
        """Start it in the foreground (a child of ours); returns its IMAP port once it answers."""
        self.port = free_port()
        self.tls_port = free_port() if self.tls else 0
        self._write_config()
        assert self.binary is not None
        with (self.dir / "log" / "stderr.log").open("wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(  # noqa: S603 - Debian's dovecot with our own config file
                [self.binary, "-F", "-c", str(self.config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"dovecot exited with {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return self.port
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise Unavailable(f"dovecot did not answer on 127.0.0.1:{self.port} within {timeout} s")

    def log(self) -> str:
        parts = []
        for name in ("stderr.log", "dovecot.log"):
            path = self.dir / "log" / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop it (SIGTERM to the master, which takes its children along) and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
