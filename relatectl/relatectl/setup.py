"""relatectl setup: write the config, make the secrets, migrate the database.

Idempotent: a value already in the file is kept, a secret already made is
never replaced, and a second run with the same flags changes nothing and
says so.

Run as root with no database configured on a machine with a local
PostgreSQL (Debian's, socket in /var/run/postgresql), setup creates the
`relate` role and database there and connects with peer authentication, as
the daemons will: no password is made or stored.

File ownership: when root writes into a directory whose group is not root's
(the package makes /etc/relate root:relate 0750), the config file and the
self-signed key get that group and mode 0640, so the daemons' user can read
them and nobody else can; otherwise they are 0600. A rewrite keeps the
file's owner, group and mode.

The commented reference of every key that the package installs (below
REFERENCE_MARKER) is kept whenever setup rewrites the file.

Protocols switched off (``smtp|imap|pop3.enabled: false``, or every listener
of one off): where systemd runs the packaged units, setup (as root) masks
that daemon's service and .socket units and stops them, so systemd no longer
listens on its ports (it would start the daemon, which exits at once, for
every client: relate.target wants each unit, so disabling them would not
do). A single listener switched off (``imap.imap.enabled: false`` with
imaps on) has its .socket unit masked the same way: the daemon would close
the socket systemd passes it, and systemd would go on accepting connections
that nobody answers. What is switched on again is unmasked and, when
relate.target runs, started.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, TypeVar

import typer
import yaml

from relate import config as config_mod
from relate.config import ConfigError
from relate.errors import Conflict
from relate.runtime import tls
from relate.runtime.listen import socket_unit
from relate.services import accounts
from relate.services import setup as setup_service
from relate.store import db, migrate
from relatectl.common import as_peer, console, fail, run, state

T = TypeVar("T")


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    section = data.setdefault(name, {})
    if not isinstance(section, dict):
        fail(f"{name}: expected a section (a mapping) in the config file")
    return section


REFERENCE_MARKER = "# --- reference: every key with its default ---"


UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))


def _mask_disabled_protocols(cfg: config_mod.Config) -> list[str]:
    """Mask (and stop) the units of each protocol the config switches off; unmask those switched on again.

    Only as root where systemd runs and the package's units are installed; what was done, as changes.
    """
    systemctl = shutil.which("systemctl")
    if (
        os.geteuid() != 0
        or systemctl is None
        or not Path("/run/systemd/system").is_dir()
        or not any((d / "relate.target").exists() for d in UNIT_DIRS)
    ):
        return []

    def systemd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([systemctl, *args], capture_output=True, text=True, check=False)  # noqa: S603

    off = cfg.disabled_services()
    done: list[str] = []
    unmasked = False
    for protocol, listeners in cfg.protocol_listeners().items():
        sockets = {role: socket_unit(role) for role in listeners}
        units = [f"relate-{protocol}.service", *sockets.values()]
        if protocol in off:
            unwanted = dict.fromkeys(units, off[protocol])
        else:  # only the listeners switched off one by one (imap.imap off, imaps on)
            roles = [role for role, lst in listeners.items() if not lst.enabled]
            unwanted = {sockets[role]: f"{protocol}.{role}.enabled is false" for role in roles}
        masked = [unit for unit in units if systemd("is-enabled", unit).stdout.strip() == "masked"]
        todo = [unit for unit in unwanted if unit not in masked]
        if todo:
            result = systemd("mask", "--now", *todo)
            if result.returncode != 0:
                fail(f"systemctl mask --now {' '.join(todo)}: {result.stderr.strip()}")
            for reason in dict.fromkeys(unwanted[unit] for unit in todo):
                names = " ".join(unit for unit in todo if unwanted[unit] == reason)
                what = protocol if protocol in off else reason.removesuffix(".enabled is false")
                done.append(f"{what} is off ({reason}): masked and stopped {names}")
        back = [unit for unit in masked if unit not in unwanted]
        if back:
            result = systemd("unmask", *back)
            if result.returncode != 0:
                fail(f"systemctl unmask {' '.join(back)}: {result.stderr.strip()}")
            done.append(f"{protocol} is on: unmasked {' '.join(back)}")
            unmasked = True
        service = units[0]
        if (todo or back) and protocol not in off and systemd("is-active", "--quiet", service).returncode == 0:
            # A running daemon keeps the sockets it was started with (systemd also refuses to start a .socket
            # unit whose service runs): it starts again, with the listeners now wanted (Sockets= pulls them in).
            for verb in ("stop", "start"):
                result = systemd(verb, service)
                if result.returncode != 0:
                    fail(f"systemctl {verb} {service}: {result.stderr.strip()}")
            done.append(f"{protocol}: restarted {service} (its sockets changed)")
    if unmasked and systemd("is-active", "--quiet", "relate.target").returncode == 0:
        systemd("start", "relate.target")  # what it wants and does not run yet: the units just unmasked
    return done


def _shared_group(directory: Path) -> int | None:
    """The group files in ``directory`` are shared with, when root writes there; None: private (0600)."""
    if os.geteuid() != 0 or not directory.is_dir():
        return None
    gid = directory.stat().st_gid
    return gid if gid != 0 else None


def _restrict(path: Path, group: int | None) -> None:
    """``path`` as root:``group`` 0640, or left 0600 with no shared group."""
    if group is not None:
        os.chown(path, 0, group)
        os.chmod(path, 0o640)


def _write_config(path: Path, data: dict[str, Any]) -> None:
    """Write atomically, readable by owner (and group, if shared) only: it holds secrets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    reference = ""
    owner: tuple[int, int] | None
    if path.exists():
        old = path.stat()
        mode, owner = stat.S_IMODE(old.st_mode) & 0o640, (old.st_uid, old.st_gid)
        text = path.read_text(encoding="utf-8")
        at = text.find(REFERENCE_MARKER)
        reference = "\n" + text[at:] if at >= 0 else ""
    else:
        group = _shared_group(path.parent)
        mode, owner = (0o640, (0, group)) if group is not None else (0o600, None)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        if owner is not None and os.geteuid() == 0:
            os.fchown(fh.fileno(), *owner)
        os.fchmod(fh.fileno(), mode)
        fh.write("# Relate Mail configuration: see relate.yaml(5). Written by `relatectl setup`.\n")
        yaml.safe_dump(data, fh, sort_keys=False, default_flow_style=False)
        fh.write(reference)
    os.replace(tmp, path)


def setup(
    hostname: str | None = typer.Option(None, "--hostname", help="This server's public name (HELO, certificates)."),
    domain: str | None = typer.Option(None, "--domain", help="A first domain to host."),
    dsn: str | None = typer.Option(None, "--dsn", help="PostgreSQL DSN, e.g. postgresql://relate@/relate."),
    cert: Path | None = typer.Option(None, "--cert", help="TLS certificate (PEM); default: a self-signed one."),
    key: Path | None = typer.Option(None, "--key", help="TLS private key (PEM) for --cert."),
    non_interactive: bool = typer.Option(
        False, "--non-interactive", help="Never prompt; fail if something is missing."
    ),
) -> None:
    """Set Relate Mail up: config file, internal key, VAPID keys, certificate, schema."""
    path = config_mod.config_path(state.config_path)
    data: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = config_mod.read_yaml(path) if path.stat().st_size else None
        except ConfigError as exc:
            fail(str(exc))
        if loaded is not None and not isinstance(loaded, dict):
            fail(f"{path}: the top level must be a mapping of keys")
        data = loaded or {}
    ask = not non_interactive and sys.stdin.isatty()
    changes: list[str] = []

    def put(section: dict[str, Any], name: str, value: Any, label: str) -> None:
        if value is not None and section.get(name) != value:
            section[name] = value
            changes.append(label)

    if hostname is None and "hostname" not in data:
        hostname = typer.prompt("Hostname", default=socket.getfqdn()) if ask else socket.getfqdn()
    put(data, "hostname", hostname, f"hostname = {hostname}")

    database = _section(data, "database")
    create_local = False
    if dsn is None and not database.get("dsn") and not os.environ.get("RELATE_DATABASE__DSN"):
        if os.geteuid() == 0 and setup_service.local_postgres():
            dsn, create_local = setup_service.local_dsn(), True
        elif not ask:
            fail("no database configured: pass --dsn postgresql://USER@HOST/DB (or set database.dsn)")
        else:
            dsn = typer.prompt("PostgreSQL DSN", default="postgresql://relate@/relate")
    put(database, "dsn", dsn, "database.dsn")

    internal = _section(data, "internal")
    if not internal.get("api_key") and not internal.get("api_key_file"):
        put(internal, "api_key", setup_service.new_internal_key(), "internal.api_key (generated)")

    push = _section(data, "push")
    if not push.get("vapid_private_key") and not push.get("vapid_private_key_file"):
        public, private = setup_service.new_vapid_keys()
        put(push, "vapid_public_key", public, "push.vapid_public_key (generated)")
        put(push, "vapid_private_key", private, "push.vapid_private_key (generated)")

    tls_section = _section(data, "tls")
    self_signed: tuple[Path, Path] | None = None
    if (cert is None) != (key is None):
        fail("--cert and --key go together")
    if cert is not None and key is not None:
        try:
            tls.server_context(cert, key)
        except (OSError, ValueError) as exc:
            fail(f"--cert/--key: cannot load the pair: {exc}")
        put(tls_section, "cert", str(cert.resolve()), f"tls.cert = {cert}")
        put(tls_section, "key", str(key.resolve()), f"tls.key = {key}")
    elif not tls_section.get("cert"):
        tls_dir = path.parent / "tls"
        cert_path, key_path = tls_dir / "cert.pem", tls_dir / "key.pem"
        if not cert_path.exists():
            self_signed = (cert_path, key_path)
        put(tls_section, "cert", str(cert_path), f"tls.cert = {cert_path}")
        put(tls_section, "key", str(key_path), f"tls.key = {key_path}")

    for name in [k for k, v in data.items() if v == {}]:
        del data[name]
    try:
        cfg = config_mod.from_mapping(data, str(path))
    except ConfigError as exc:
        fail(str(exc))
    if self_signed is not None:
        tls.make_self_signed(*self_signed, str(data.get("hostname") or socket.getfqdn()))
        group = _shared_group(path.parent)
        if group is not None:
            os.chown(self_signed[0].parent, 0, group)
            os.chmod(self_signed[0].parent, 0o750)  # noqa: S103 - the group must enter the directory to read the key
            _restrict(self_signed[1], group)
        changes.append(f"self-signed certificate {self_signed[0]}")
    if changes:
        _write_config(path, data)

    # Root reaches a peer-authenticated database as the role's own user.
    cfg.database.pool_min = cfg.database.pool_max = 1  # every connection opens inside acting_as

    async def database_work() -> list[str]:
        done: list[str] = []
        if create_local:
            done += await setup_service.create_local_database()
        conn = await as_peer(cfg, lambda: db.connect(cfg.database))
        try:
            for mig in await migrate.migrate(conn):
                done.append(f"migration {mig.version:04d}_{mig.name}")
        finally:
            await conn.close()
        if domain:
            pool = await as_peer(cfg, lambda: db.create_pool(cfg.database))
            try:
                row = await accounts.add_domain(pool, domain)
                done.append(f"domain {row['name']}")
            except Conflict:
                pass
            finally:
                await pool.close()
        return done

    changes += run(database_work())
    changes += _mask_disabled_protocols(cfg)
    if changes:
        console.print(f"setup wrote {path}:" if path.exists() else "setup:", highlight=False)
        for change in changes:
            console.print(f"  + {change}", highlight=False)
        console.print(
            "next: relatectl user add USER@DOMAIN, then systemctl enable --now relate.target", highlight=False
        )
    else:
        console.print(f"setup: nothing to change ({path} and the database are already set up)", highlight=False)
