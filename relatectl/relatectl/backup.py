"""relatectl backup / restore: the database, the config and the keys it names, as one tar stream.

The work is in relate/services/backup.py (its docstring has the policy and
the archive's layout); this module opens the database, says what happened,
and turns failures into one line.
"""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import IO

import asyncpg
import typer

from relate.config import Config
from relate.services import backup as service
from relate.services import setup as setup_service
from relate.store import db, migrate
from relatectl.common import console, err_console, fail, load_config, run

PgBinOption = typer.Option(
    None, "--pg-bin", help="Directory of the PostgreSQL client programs to use (default: found by version)."
)


async def _connect(cfg: Config) -> tuple[asyncpg.Connection, bool]:
    """A connection, and whether it needed peer login as the DSN's role (root only; see common.as_peer)."""
    try:
        return await db.connect(cfg.database), False
    except db.DatabaseUnavailable:
        peer = setup_service.peer_user(cfg.database.dsn)
        if peer is None or os.geteuid() != 0:
            raise
        with setup_service.acting_as(peer):
            return await db.connect(cfg.database), True


async def _server(cfg: Config, *, need_empty: bool) -> tuple[int, int, bool]:
    """(server major version, schema version, needs peer login); with ``need_empty``, refuse a database with
    anything in it."""
    conn, peer = await _connect(cfg)
    try:
        major = int(await conn.fetchval("SELECT current_setting('server_version_num')::int / 10000"))
        if need_empty:
            tables = await conn.fetchval(
                """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"""
            )
            extensions = await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'")
            if tables or extensions:
                name = await conn.fetchval("SELECT current_database()")
                have = await migrate.current_version(conn)
                fail(
                    f"database {name} is not empty ({tables} tables, schema version {have}): restore only into an "
                    "empty database (createdb a new one and point database.dsn at it)"
                )
        return major, await migrate.current_version(conn), peer
    finally:
        await conn.close()


async def _migrate(cfg: Config) -> list[migrate.Migration]:
    conn, _ = await _connect(cfg)
    try:
        return await migrate.migrate(conn)
    finally:
        await conn.close()


def _open_out(target: str) -> tuple[IO[bytes], str]:
    if target == "-":
        if sys.stdout.isatty():
            fail("refusing to write a backup to a terminal: give a FILE, or redirect standard output")
        return sys.stdout.buffer, "standard output"
    path = Path(target)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fail(f"{path} exists: give a new file name")
    except OSError as exc:
        fail(f"cannot create {path}: {exc.strerror or exc}")
    return os.fdopen(fd, "wb"), str(path)


def backup(
    file: str | None = typer.Argument(
        None, metavar="[FILE|-]", help="Where to write the archive; - for standard output (default: a dated file here)."
    ),
    pg_bin: Path | None = PgBinOption,
) -> None:
    """Back up the database, the config file and the keys it names into one tar archive (0600).

    The dump is consistent (one snapshot) while the daemons run. Size and time go to standard error.
    """
    cfg = load_config()
    major, schema, peer = run(_server(cfg, need_empty=False))
    target = file or datetime.now().strftime("relate-backup-%Y%m%d-%H%M%S.tar")
    out, shown = _open_out(target)
    ok = False
    try:
        result = service.write_backup(
            out,
            dsn=cfg.database.dsn or "",
            server_major=major,
            schema_version=schema,
            config_file=cfg.source,
            run_as=service.which_run_as(cfg.database.dsn or "", peer),
            pg_bin=service.pg_bin_exists(pg_bin),
        )
        out.flush()
        ok = True
    except service.BackupError as exc:
        fail(str(exc))
    finally:
        if out is not sys.stdout.buffer:
            out.close()
            if not ok:
                with contextlib.suppress(OSError):
                    os.unlink(target)
    for missing in result.missing:
        err_console.print(f"warning: the config names {missing}, which does not exist: not in the backup")
    if cfg.source is None:
        err_console.print("warning: no config file in force (defaults and RELATE_* only): the backup has the database")
    err_console.print(
        f"backup written to {shown}: {service.human_size(result.bytes_written)} in {result.seconds:.1f} s "
        f"(database schema {result.schema_version}, dump {service.human_size(result.dump_bytes)} by pg_dump "
        f"{result.pg_dump.major}; config and {len(result.files)} file(s) it names)",
        highlight=False,
    )


def restore(
    file: str = typer.Argument(..., metavar="FILE|-", help="The archive of `relatectl backup`; - for stdin."),
    config_dir: Path | None = typer.Option(
        None,
        "--config-dir",
        help="Write the config file and the files it names under this directory (default: not written).",
    ),
    pg_bin: Path | None = PgBinOption,
) -> None:
    """Restore a backup into the empty database of database.dsn, then migrate it to this release.

    A database with anything in it is refused. The config and keys are written only with --config-dir.
    """
    cfg = load_config()
    major, _, peer = run(_server(cfg, need_empty=True))
    if file == "-":
        source: IO[bytes] = sys.stdin.buffer
    else:
        try:
            source = Path(file).open("rb")  # noqa: SIM115 - closed below, after the stream is read
        except OSError as exc:
            fail(f"cannot read {file}: {exc.strerror or exc}")
    try:
        done = service.restore_archive(
            source,
            dsn=cfg.database.dsn or "",
            server_major=major,
            config_dir=config_dir.absolute() if config_dir is not None else None,
            run_as=service.which_run_as(cfg.database.dsn or "", peer),
            pg_bin=service.pg_bin_exists(pg_bin),
        )
    except service.BackupError as exc:
        fail(str(exc))
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    ran = run(_migrate(cfg))
    manifest = done.manifest
    console.print(
        f"restored the database of {manifest['created_at']} (schema {manifest['schema_version']}, "
        f"Relate Mail {manifest['relate_version']}): {service.human_size(done.dump_bytes)} dump "
        f"by pg_restore {done.pg_restore.major} in {done.seconds:.1f} s",
        highlight=False,
    )
    for mig in ran:
        console.print(f"applied {mig.version:04d}_{mig.name}", highlight=False)
    for original, path in done.written:
        console.print(f"wrote {path} (was {original})", highlight=False)
    if config_dir is None and (manifest.get("config") or manifest["files"]):
        files = f" and the {len(manifest['files'])} file(s) it names" if manifest["files"] else ""
        console.print(f"the config file{files} were not written: give --config-dir DIR", highlight=False)
