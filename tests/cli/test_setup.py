"""`relatectl setup`: the config file, its secrets, the certificate, the schema and a first domain.

Setup is idempotent: a second identical run changes nothing, secrets once made
are kept, and whatever the admin added to the file survives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import yaml
from cryptography import x509
from typer.testing import CliRunner, Result

from relate import config as config_mod
from relate.runtime import tls
from relate.store import migrate
from relatectl.main import app

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/x"  # nothing listens on port 1
HOST = "mail.example.org"


def cli_env(**extra: str | None) -> dict[str, str | None]:
    """No RELATE_* variable from outside (no RELATE_CONFIG, no DSN), wide and colourless output."""
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith("RELATE_")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None})
    env.update(extra)
    return env


def relatectl(config: Path, *args: str, **env: str | None) -> Result:
    return CliRunner().invoke(app, ["--config", str(config), *args], env=cli_env(**env))


def setup(config: Path, *args: str, **env: str | None) -> Result:
    """``relatectl --config CONFIG setup --non-interactive ARGS``."""
    return relatectl(config, "setup", "--non-interactive", *args, **env)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert result.exception is None
    return result


def one_error(result: Result) -> str:
    """The single ``error: ...`` line of a failed command (exit 1, nothing on stdout, no traceback)."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def read(config: Path) -> dict[str, Any]:
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def san_dns_names(cert: Path) -> list[str]:
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName)


def b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def domains(dsn: str) -> list[str]:
    async def go() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            return [r["name"] for r in await conn.fetch("SELECT name FROM domains ORDER BY name")]
        finally:
            await conn.close()

    return asyncio.run(go())


@pytest.fixture
def empty_dsn(pg_server: str) -> Iterator[str]:
    """A DSN of a brand-new database with no schema at all (not cloned from the migrated template)."""
    name = f"relate_setup_empty_{os.getpid()}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_server)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    asyncio.run(admin(f"CREATE DATABASE {name}"))
    yield urlunsplit(urlsplit(pg_server)._replace(path=f"/{name}"))
    asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def test_setup_writes_config_cert_schema_and_domain(empty_dsn: str, tmp_path: Path) -> None:
    """A first setup writes a 0600 config with secrets and a self-signed cert, migrates, and adds the domain."""
    config = tmp_path / "relate.yaml"
    result = ok(setup(config, "--hostname", HOST, "--dsn", empty_dsn, "--domain", "example.org"))

    lines = result.stdout.splitlines()
    assert lines[0] == f"setup wrote {config}:"
    for change in [
        f"  + hostname = {HOST}",
        "  + database.dsn",
        "  + internal.api_key (generated)",
        "  + push.vapid_public_key (generated)",
        "  + push.vapid_private_key (generated)",
        f"  + self-signed certificate {tmp_path / 'tls' / 'cert.pem'}",
        *(f"  + migration {m.version:04d}_{m.name}" for m in migrate.available()),
        "  + domain example.org",
    ]:
        assert change in lines, result.stdout
    assert lines[-1].startswith("next: relatectl user add")

    assert mode(config) == 0o600
    assert config.read_text(encoding="utf-8").startswith("# Relate Mail configuration")
    assert not (tmp_path / ".relate.yaml.tmp").exists()
    data = read(config)
    assert data["hostname"] == HOST
    assert data["database"] == {"dsn": empty_dsn}
    assert data["internal"]["api_key"].startswith("relate_internal_")
    assert len(b64url(data["push"]["vapid_public_key"])) == 65  # uncompressed P-256 point
    assert len(b64url(data["push"]["vapid_private_key"])) == 32
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    assert data["tls"] == {"cert": str(cert), "key": str(key)}
    assert HOST in san_dns_names(cert)
    assert mode(key) == 0o600
    tls.server_context(cert, key)  # the pair loads

    # No secret is echoed to the terminal.
    for secret in (data["internal"]["api_key"], data["push"]["vapid_private_key"], empty_dsn):
        assert secret not in result.output

    assert domains(empty_dsn) == ["example.org"]
    # The other commands use the file setup wrote.
    assert json.loads(ok(relatectl(config, "domain", "list", "--json")).stdout)[0]["name"] == "example.org"
    assert ok(relatectl(config, "db", "status")).stdout.splitlines()[-1] == (
        f"schema is current (version {migrate.latest_version()})"
    )


def test_setup_file_loads_with_config_load(dsn: str, tmp_path: Path) -> None:
    """The file setup writes is a valid configuration holding what setup reported."""
    config = tmp_path / "relate.yaml"
    ok(setup(config, "--hostname", HOST, "--dsn", dsn))
    data = read(config)

    cfg = config_mod.load(config, environ={})
    assert cfg.source == config
    assert cfg.hostname == HOST
    assert cfg.database.dsn == dsn
    assert cfg.internal.api_key == data["internal"]["api_key"]
    assert cfg.push.vapid_public_key == data["push"]["vapid_public_key"]
    assert cfg.push.vapid_private_key == data["push"]["vapid_private_key"]
    assert cfg.tls.cert == tmp_path / "tls" / "cert.pem"
    assert cfg.tls.key == tmp_path / "tls" / "key.pem"


def test_setup_second_identical_run_changes_nothing(dsn: str, tmp_path: Path) -> None:
    """Running setup again with the same flags exits 0, says nothing changed, and leaves the files as they were."""
    config = tmp_path / "relate.yaml"
    args = ("--hostname", HOST, "--dsn", dsn, "--domain", "example.org")
    ok(setup(config, *args))
    before = config.read_bytes()
    cert_before = (tmp_path / "tls" / "cert.pem").read_bytes()
    key_before = (tmp_path / "tls" / "key.pem").read_bytes()

    again = ok(setup(config, *args))
    assert again.stdout == f"setup: nothing to change ({config} and the database are already set up)\n"
    assert again.stderr == ""
    assert config.read_bytes() == before
    assert (tmp_path / "tls" / "cert.pem").read_bytes() == cert_before
    assert (tmp_path / "tls" / "key.pem").read_bytes() == key_before
    assert mode(config) == 0o600
    assert domains(dsn) == ["example.org"]


def test_setup_non_interactive_without_dsn_fails(tmp_path: Path) -> None:
    """`setup --non-interactive` with no DSN anywhere fails with one line saying to pass --dsn, writing nothing."""
    config = tmp_path / "relate.yaml"
    line = one_error(setup(config, "--hostname", HOST))
    assert "no database configured" in line
    assert "--dsn" in line
    assert list(tmp_path.iterdir()) == []


def test_setup_takes_the_dsn_from_the_environment(dsn: str, tmp_path: Path) -> None:
    """With RELATE_DATABASE__DSN set, setup needs no --dsn and does not copy the DSN into the file."""
    config = tmp_path / "relate.yaml"
    ok(setup(config, "--hostname", HOST, "--domain", "example.org", RELATE_DATABASE__DSN=dsn))
    assert "database" not in read(config)
    assert domains(dsn) == ["example.org"]


def test_setup_cert_and_key_go_together(tmp_path: Path) -> None:
    """`--cert` without `--key` (or the reverse) fails with one line, writing nothing."""
    pem = tmp_path / "given.pem"
    pem.write_text("not used\n", encoding="utf-8")
    config = tmp_path / "etc" / "relate.yaml"
    for flag in ("--cert", "--key"):
        line = one_error(setup(config, "--hostname", HOST, "--dsn", UNREACHABLE, flag, str(pem)))
        assert line == "error: --cert and --key go together"
    assert not config.exists()
    assert not (tmp_path / "etc" / "tls").exists()


def test_setup_refuses_a_cert_and_key_that_do_not_load(tmp_path: Path) -> None:
    """A cert/key pair that is not PEM, or whose key does not match, is refused with one line."""
    tls.make_self_signed(tmp_path / "a.pem", tmp_path / "a.key", HOST)
    tls.make_self_signed(tmp_path / "b.pem", tmp_path / "b.key", HOST)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n", encoding="utf-8")
    config = tmp_path / "etc" / "relate.yaml"
    for cert, key in [(garbage, tmp_path / "a.key"), (tmp_path / "a.pem", tmp_path / "b.key")]:
        line = one_error(
            setup(config, "--hostname", HOST, "--dsn", UNREACHABLE, "--cert", str(cert), "--key", str(key))
        )
        assert line.startswith("error: --cert/--key: cannot load the pair")
    assert not config.exists()


def test_setup_records_a_given_cert_and_key(dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid --cert/--key pair is recorded (as absolute paths) and no self-signed certificate is made."""
    certs = tmp_path / "certs"
    tls.make_self_signed(certs / "mail.pem", certs / "mail.key", HOST)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "relate.yaml"

    result = ok(setup(config, "--hostname", HOST, "--dsn", dsn, "--cert", "certs/mail.pem", "--key", "certs/mail.key"))
    assert "self-signed" not in result.stdout
    assert "  + tls.cert = certs/mail.pem" in result.stdout.splitlines()
    assert read(config)["tls"] == {"cert": str(certs / "mail.pem"), "key": str(certs / "mail.key")}
    assert not (tmp_path / "tls").exists()
    cfg = config_mod.load(config, environ={})
    assert cfg.tls.cert == certs / "mail.pem"


def test_setup_keeps_what_the_admin_added(dsn: str, tmp_path: Path) -> None:
    """Keys the admin added to the file survive a later setup that rewrites it; secrets are not replaced."""
    config = tmp_path / "relate.yaml"
    ok(setup(config, "--hostname", HOST, "--dsn", dsn))
    first = read(config)
    with config.open("a", encoding="utf-8") as fh:
        fh.write("logging:\n  level: DEBUG\nauth:\n  cache_seconds: 10.0\n")
    edited = config.read_bytes()

    assert "nothing to change" in ok(setup(config, "--hostname", HOST, "--dsn", dsn)).stdout
    assert config.read_bytes() == edited

    result = ok(setup(config, "--hostname", "mx.example.org", "--dsn", dsn))
    assert result.stdout.splitlines()[1:] == [
        "  + hostname = mx.example.org",
        "next: relatectl user add USER@DOMAIN, then systemctl enable --now relate.target",
    ]
    data = read(config)
    assert data["logging"] == {"level": "DEBUG"}
    assert data["auth"] == {"cache_seconds": 10.0}
    assert data["hostname"] == "mx.example.org"
    for section in ("database", "internal", "push", "tls"):
        assert data[section] == first[section], section
    assert mode(config) == 0o600

    cfg = config_mod.load(config, environ={})
    assert cfg.logging.level == "DEBUG"
    assert cfg.auth.cache_seconds == 10.0
    assert cfg.hostname == "mx.example.org"


def test_setup_refuses_a_config_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    """A config file whose top level is not a mapping is refused with one line and left alone."""
    config = tmp_path / "relate.yaml"
    config.write_text("- just\n- a list\n", encoding="utf-8")
    line = one_error(setup(config, "--hostname", HOST, "--dsn", UNREACHABLE))
    assert line == f"error: {config}: the top level must be a mapping of keys"
    assert config.read_text(encoding="utf-8") == "- just\n- a list\n"


def test_setup_with_unreachable_database_fails_in_one_line(tmp_path: Path) -> None:
    """When the database cannot be reached, setup fails with one line: cannot connect to the database."""
    config = tmp_path / "relate.yaml"
    line = one_error(setup(config, "--hostname", HOST, "--dsn", UNREACHABLE))
    assert line.startswith("error: cannot connect to the database")


def test_setup_reports_config_problems_in_one_line(tmp_path: Path) -> None:
    """A broken config file or a bad RELATE_ variable makes setup fail with one line, not a traceback."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("database:\n  dsn: [unclosed\n", encoding="utf-8")
    assert str(broken) in one_error(setup(broken, "--hostname", HOST, "--dsn", UNREACHABLE))

    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text("databse:\n  dsn: postgresql://relate@/relate\n", encoding="utf-8")
    line = one_error(setup(misspelt, "--hostname", HOST, "--dsn", UNREACHABLE))
    assert "databse" in line
    assert str(misspelt) in line

    fresh = tmp_path / "fresh.yaml"
    line = one_error(setup(fresh, "--hostname", HOST, "--dsn", UNREACHABLE, RELATE_DATABASE__POOL_MAX="ten"))
    assert "$RELATE_DATABASE__POOL_MAX" in line


PACKAGED = Path(__file__).resolve().parents[2] / "packaging" / "relate.yaml"


def test_setup_keeps_the_packaged_reference_and_the_shared_group(dsn: str, tmp_path: Path) -> None:
    """Over the packaged commented config in a group-owned dir, setup keeps the reference and writes root:group 0640."""
    if os.geteuid() != 0:
        pytest.skip("ownership needs root")
    etc = tmp_path / "etc"
    etc.mkdir()
    os.chown(etc, 0, 65534)  # nogroup stands for the package's `relate` group
    config = etc / "relate.yaml"
    config.write_text(PACKAGED.read_text(encoding="utf-8"), encoding="utf-8")
    os.chown(config, 0, 65534)  # as the package's postinst leaves it
    config.chmod(0o640)
    reference = PACKAGED.read_text(encoding="utf-8").split("# --- reference", 1)[1]

    ok(setup(config, "--hostname", HOST, "--dsn", dsn))
    text = config.read_text(encoding="utf-8")
    assert text.startswith("# Relate Mail configuration")
    assert text.endswith(reference)
    assert read(config)["hostname"] == HOST

    key = etc / "tls" / "key.pem"
    for path, want in [(key, 0o640), (etc / "tls", 0o750)]:
        assert (path.stat().st_uid, path.stat().st_gid, mode(path)) == (0, 65534, want), path

    ok(setup(config, "--hostname", "mx.example.org", "--dsn", dsn))  # a rewrite keeps it all
    assert config.read_text(encoding="utf-8").endswith(reference)
    assert (config.stat().st_gid, mode(config)) == (65534, 0o640)
    assert config_mod.load(config, environ={}).hostname == "mx.example.org"
