"""relatectl dev: the one-command run on an embedded PostgreSQL.

Everything lives under the state directory (``./.relate-dev``): the
database cluster, a self-signed certificate, the config the daemons run with
(``relate.yaml``, 0600), and ``dev.json`` with the DSN, the demo account, its
key and the ports, for scripts. A second run reuses all of it, the key
included while it still authenticates.

The dev run is shaped like an installed system: every daemon is a process of
its own, started by the same code as its systemd unit, on sockets bound for
it and handed over by socket activation (relate/runtime/supervisor.py), each
with its own pool, change feed and heartbeat. What a user measures or
debugs in the dev run is what an installed box does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
import yaml

from relate import auth
from relate import config as config_mod
from relate.config import Config
from relate.errors import Conflict, RelateError
from relate.runtime import tls
from relate.runtime.daemon import setup_logging
from relate.runtime.embedded_pg import EmbeddedPostgres
from relate.runtime.supervisor import DAEMONS, Supervisor, bind
from relate.services import accounts
from relate.services import setup as setup_service
from relate.store import accounts as account_store
from relate.store import db, migrate
from relatectl.common import console, fail, run, state

DEMO_DOMAIN = "example.test"
DEMO_USER = f"demo@{DEMO_DOMAIN}"


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


# The dev port of each listener (the design's table).
DEV_SMTP_PORTS = {"mx": 2525, "submission": 2587, "submissions": 2465}
DEV_IMAP_PORTS = {"imap": 2143, "imaps": 2993}
DEV_POP3_PORTS = {"pop3": 2110, "pop3s": 2995}
DEV_API_PORT = 8080
# Each daemon's metrics endpoint (production: 9461-9465, config.MetricsConfig).
DEV_METRICS_PORTS = {"smtp": 9561, "imap": 9562, "pop3": 9563, "api": 9564, "delivery": 9565}


def dev_config(state_dir: Path, dsn: str, internal_key: str, *, any_port: bool = False) -> Config:
    """The dev run's config: the named file (if any) and the environment, then the dev overrides."""
    cfg = config_mod.load(state.config_path) if state.config_path else config_mod.from_mapping({}, "defaults")
    cfg.hostname = "localhost"
    for role, port in DEV_SMTP_PORTS.items():
        cfg.smtp.listeners()[role].listen = [f"127.0.0.1:{0 if any_port else port}"]
    cfg.imap.imap.listen = [f"127.0.0.1:{0 if any_port else DEV_IMAP_PORTS['imap']}"]
    cfg.imap.imaps.listen = [f"127.0.0.1:{0 if any_port else DEV_IMAP_PORTS['imaps']}"]
    cfg.pop3.pop3.listen = [f"127.0.0.1:{0 if any_port else DEV_POP3_PORTS['pop3']}"]
    cfg.pop3.pop3s.listen = [f"127.0.0.1:{0 if any_port else DEV_POP3_PORTS['pop3s']}"]
    cfg.api.listen = [f"127.0.0.1:{0 if any_port else DEV_API_PORT}"]
    if cfg.metrics.enabled:
        for service, port in DEV_METRICS_PORTS.items():
            setattr(cfg.metrics, service, [f"127.0.0.1:{0 if any_port else port}"])
    # The dev run listens on loopback only, where plain-text logins harm no one.
    cfg.imap.allow_plaintext_auth = True
    cfg.pop3.allow_plaintext_auth = True
    cfg.database.dsn = dsn
    cfg.internal.api_key = internal_key
    cfg.internal.api_socket = state_dir / "api.sock"
    cfg.tls.cert, cfg.tls.key = dev_tls_paths(state_dir)
    return cfg


def dev_tls_paths(state_dir: Path) -> tuple[Path, Path]:
    """The dev run's self-signed certificate and key."""
    return state_dir / "tls" / "cert.pem", state_dir / "tls" / "key.pem"


async def _prepare(cfg: Config, previous_key: str | None) -> str:
    """Migrate, make sure the demo domain, user and a working key exist; returns the key."""
    conn = await db.connect(cfg.database)
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()
    pool = await db.create_pool(cfg.database)
    try:
        with contextlib.suppress(Conflict):
            await accounts.add_domain(pool, DEMO_DOMAIN)
        if await account_store.get_user(pool, DEMO_USER) is None:
            await accounts.add_user(pool, DEMO_USER, "Demo User")
        if previous_key:
            checker = auth.Authenticator(pool, cfg.auth)
            try:
                await checker.authenticate(DEMO_USER, previous_key, "app", client="dev", service="dev")
                return previous_key
            except auth.AuthRefused:
                pass
        key, _ = await accounts.create_key(
            pool, DEMO_USER, "dev", list(auth.USER_SCOPES), rounds=cfg.auth.bcrypt_rounds
        )
        return key
    finally:
        await pool.close()


def _listeners(cfg: Config) -> dict[str, list[str]]:
    """The dev run's listening addresses by role (the FileDescriptorName its daemon expects); none for a
    listener or protocol switched off in config."""
    off = set(cfg.disabled_listeners())
    return {
        **{
            role: lst.listen
            for listeners in cfg.protocol_listeners().values()
            for role, lst in listeners.items()
            if cfg.listener_key(role) not in off
        },
        "api": cfg.api.listen,
        **{
            f"metrics-{service}": cfg.metrics.listen(service)
            for service in DEV_METRICS_PORTS
            if service not in cfg.disabled_services()
        },
    }


def switched_off(cfg: Config) -> dict[str, str]:
    """What the config switches off, for the banner: each disabled daemon, and each listener off by itself."""
    off = cfg.disabled_services()
    out = dict(off)
    for key in cfg.disabled_listeners():
        protocol, role = key.split(".")
        if protocol not in off:
            out[role] = f"{key}.enabled is false"
    return out


def _set_listen(cfg: Config, role: str, addresses: list[str]) -> None:
    if role == "api":
        cfg.api.listen = addresses
    elif role.startswith("metrics-"):
        setattr(cfg.metrics, role.removeprefix("metrics-"), addresses)
    elif role in cfg.smtp.listeners():
        cfg.smtp.listeners()[role].listen = addresses
    elif role.startswith("imap"):
        getattr(cfg.imap, role).listen = addresses
    else:
        getattr(cfg.pop3, role).listen = addresses


def write_config(path: Path, cfg: Config) -> None:
    """The whole effective config, for the daemons (``--config``); 0600: it holds the internal key and DSN."""
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# Written by `relatectl dev` at each start: the config every dev daemon runs with.\n")
        yaml.safe_dump(config_mod.to_mapping(cfg), fh, sort_keys=False)
    os.replace(path.with_suffix(".tmp"), path)


async def _serve(cfg: Config, state_dir: Path, describe: Callable[[dict[str, int]], list[str]]) -> None:
    """Bind every listener, run each daemon as a process of its own until SIGINT or SIGTERM.

    ``describe`` gets the bound ports and returns the banner to print once every daemon is ready.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sockets: dict[str, list[socket.socket]] = {}
    try:
        for role, addresses in _listeners(cfg).items():
            sockets[role] = [bind(address) for address in addresses]
            # With --any-port the config says port 0: the daemons (and the API, which tells
            # mail clients the ports) are given the ports really bound.
            _set_listen(cfg, role, [f"127.0.0.1:{sock.getsockname()[1]}" for sock in sockets[role]])
        config_file = state_dir / "relate.yaml"
        write_config(config_file, cfg)
        env = {k: v for k, v in os.environ.items() if not k.startswith(config_mod.ENV_PREFIX)}
        daemons = [name for name in DAEMONS if name not in cfg.disabled_services()]
        supervisor = Supervisor(config_file, state_dir / "run", sockets, daemons=daemons, env=env)
        try:
            await supervisor.start()
        except RuntimeError as exc:
            fail(str(exc))
        loop.add_signal_handler(signal.SIGHUP, supervisor.reload)
        ports = {
            ("smtp" if role == "mx" else role): socks[0].getsockname()[1] for role, socks in sockets.items() if socks
        }
        for line in describe(ports):
            console.print(line, highlight=False)
        await stop.wait()
        await supervisor.stop(grace=15)
    finally:
        for socks in sockets.values():
            for sock in socks:
                sock.close()


def dev(
    state_dir: Path = typer.Option(
        Path(".relate-dev"), "--state-dir", metavar="DIR", help="Where the dev run keeps its state."
    ),
    any_port: bool = typer.Option(
        False, "--any-port", help="Listen on free ports instead of the dev ports (dev.json has the ones used)."
    ),
) -> None:
    """Run Relate Mail for development: embedded PostgreSQL, demo domain, user and key.

    Every daemon runs as a process of its own on sockets the dev run binds, as under systemd.
    """
    # Until the event loop takes over, SIGTERM interrupts like Ctrl-C, so the
    # embedded PostgreSQL is stopped whenever the dev run is.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    state_file = state_dir / "dev.json"
    previous = _read_state(state_file)
    pg = EmbeddedPostgres(state_dir / "pgdata")
    try:
        try:
            dsn = pg.start()
        except RelateError as exc:
            fail(str(exc))
        cfg = dev_config(
            state_dir, dsn, previous.get("internal_key") or setup_service.new_internal_key(), any_port=any_port
        )
        setup_logging(cfg.logging.level)
        cert, key_file = dev_tls_paths(state_dir)
        if not cert.exists() or not key_file.exists():
            tls.make_self_signed(cert, key_file, "localhost")
        key = run(_prepare(cfg, previous.get("key")))
        info: dict[str, Any] = {
            "dsn": dsn,
            "domain": DEMO_DOMAIN,
            "user": DEMO_USER,
            "key": key,
            "internal_key": cfg.internal.api_key,
            "tls": {"cert": str(cert), "key": str(key_file)},
            "state_dir": str(state_dir),
        }

        off = switched_off(cfg)

        def describe(bound: dict[str, int]) -> list[str]:
            ports = {name: port for name, port in bound.items() if not name.startswith("metrics-")}
            # Each daemon's metrics endpoint; `relatectl --config STATE/relate.yaml status` reads them too.
            info["ports"] = ports
            info["metrics"] = {n.removeprefix("metrics-"): p for n, p in bound.items() if n.startswith("metrics-")}
            info["off"] = off
            _write_state(state_file, info)
            endpoints = ", ".join(f"{name} {port}" for name, port in info["metrics"].items())
            return [
                "[bold]Relate Mail dev run[/]",
                f"  database     {dsn}",
                f"  domain       {DEMO_DOMAIN}",
                f"  user         {DEMO_USER}",
                f"  key          {key}",
                *(f"  {name:<12} 127.0.0.1:{port}" for name, port in ports.items()),
                *([f"  metrics      127.0.0.1: {endpoints} (GET /metrics)"] if endpoints else []),
                *(f"  {name:<12} off ({reason})" for name, reason in off.items()),
                f"  state        {state_file}",
                "Ctrl-C stops everything.",
            ]

        run(_serve(cfg, state_dir, describe))
    except KeyboardInterrupt:
        pass
    finally:
        pg.stop()
    console.print("stopped", highlight=False)
