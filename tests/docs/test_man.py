"""The man pages in man/: complete against the code, and clean under groff.

relatectl(8) must document every command of the typer app with every option
and argument; relate.yaml(5) every configuration key with its default and
its environment variable. A command or key added without its documentation
fails here. Each page must render with `man -l` and `groff -man -ww` without
a single warning.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup

from relate import config as config_mod
from relatectl.main import app

MAN = Path(__file__).resolve().parents[2] / "man"
PAGES = sorted(p for p in MAN.iterdir() if re.fullmatch(r".+\.[1-8]", p.name))
DAEMONS = ["relate-smtp", "relate-imap", "relate-pop3", "relate-delivery", "relate-api"]


def plain(roff: str) -> str:
    """Roff source as the reader sees the words: no font escapes, \\- as -."""
    text = re.sub(r"\\f[BIRP]", "", roff)
    return text.replace("\\-", "-").replace("\\e", "\\")


def leaf_commands() -> Iterator[tuple[str, Any]]:
    """(path, click command) for every command of relatectl that runs something."""

    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[str, Any]]:
        if isinstance(cmd, TyperGroup):  # the top level loads each noun when asked for it
            ctx = typer.Context(cmd)
            for name in sorted(cmd.list_commands(ctx)):
                yield from walk(cmd.get_command(ctx, name), [*path, name])
        else:
            yield " ".join(path), cmd

    yield from walk(typer.main.get_command(app), [])


def sections(page: str) -> dict[str, str]:
    """relatectl(8)'s `.SS` command sections by command path ("key create")."""
    out: dict[str, str] = {}
    for chunk in plain(page).split("\n.SS ")[1:]:
        heading, _, body = chunk.partition("\n")
        words = []
        for word in heading.split():
            if not re.fullmatch(r"[a-z0-9-]+", word):
                break
            words.append(word)
        out[" ".join(words)] = heading + "\n" + body.split("\n.SH ")[0]
    return out


def config_keys() -> Iterator[tuple[str, Any]]:
    """(dotted key, default) for every key of the Config dataclasses."""

    def walk(obj: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        for f in dataclasses.fields(obj):
            if f.metadata.get("internal"):
                continue
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                yield from walk(value, f"{prefix}{f.name}.")
            else:
                yield prefix + f.name, value

    yield from walk(config_mod.Config(), "")


def shown_default(key: str, value: Any) -> str:
    """A default as relate.yaml(5) writes it."""
    if key == "hostname":
        return "this machine's fully qualified name"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]" if value else "[] (empty)"
    return str(value)


def test_there_is_a_page_for_relatectl_the_config_file_and_each_daemon() -> None:
    """man/ holds relatectl(8), relate.yaml(5) and one section-8 page per daemon."""
    names = {p.name for p in PAGES}
    assert {"relatectl.8", "relate.yaml.5", *(f"{d}.8" for d in DAEMONS)} <= names


def test_relatectl_page_documents_every_command_option_and_argument() -> None:
    """Every relatectl command has a section in relatectl(8) naming each of its options and arguments."""
    documented = sections((MAN / "relatectl.8").read_text(encoding="utf-8"))
    problems = []
    for path, cmd in leaf_commands():
        body = documented.get(path)
        if body is None:
            problems.append(f"relatectl {path}: no section")
            continue
        for param in cmd.params:
            if param.name == "help":
                continue
            # An argument as --help shows it: its metavar (DOMAIN, ID...), else its name in capitals.
            shown = (param.metavar or param.name.upper()).removesuffix("...")
            names = param.opts if param.param_type_name == "option" else [shown]
            for name in names:
                if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", body):
                    problems.append(f"relatectl {path}: {name} not documented")
    assert problems == []


def test_relatectl_page_documents_the_global_options() -> None:
    """relatectl(8) documents the options every command takes (--config, --version)."""
    page = plain((MAN / "relatectl.8").read_text(encoding="utf-8"))
    for param in typer.main.get_command(app).params:
        for name in param.opts:
            if name not in ("--help", "-h"):
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", page), name


def test_config_page_documents_every_key_with_its_default_and_variable() -> None:
    """relate.yaml(5) has an entry for every config key, giving its default and its RELATE_* variable."""
    page = plain((MAN / "relate.yaml.5").read_text(encoding="utf-8"))
    problems = []
    for key, default in config_keys():
        env = "RELATE_" + "__".join(part.upper() for part in key.split("."))
        expected = f".TP\n{key}\nDefault: {shown_default(key, default)}. Environment: {env}."
        if expected not in page:
            problems.append(f"{key}: want {expected!r}")
    assert problems == []


def test_daemon_pages_name_their_sockets_signals_and_files() -> None:
    """Each daemon page has SOCKETS, SIGNALS (SIGHUP, SIGTERM) and FILES sections, naming the config file."""
    for daemon in DAEMONS:
        page = plain((MAN / f"{daemon}.8").read_text(encoding="utf-8"))
        for needed in (".SH SOCKETS", ".SH SIGNALS", "SIGHUP", "SIGTERM", ".SH FILES", "/etc/relate/relate.yaml"):
            assert needed in page, (daemon, needed)


def test_smtp_imap_pop3_pages_name_every_socket_unit_of_their_daemon() -> None:
    """The socket units in systemd/ that start a daemon are each named, with their role, on its page."""
    units = Path(__file__).resolve().parents[2] / "systemd"
    if not units.is_dir():
        pytest.skip("no systemd/ units in this tree")
    for unit in sorted(units.glob("*.socket")):
        text = unit.read_text(encoding="utf-8")
        service = re.search(r"^Service=(.+)\.service$", text, re.M)
        role = re.search(r"^FileDescriptorName=(.+)$", text, re.M)
        daemon = service[1] if service else unit.stem
        page = plain((MAN / f"{daemon}.8").read_text(encoding="utf-8"))
        assert unit.name in page, (unit.name, daemon)
        if role:
            assert f"{role[1]}: {unit.name}" in page, (unit.name, role[1])


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_renders_without_groff_warnings(page: Path) -> None:
    """groff -man -ww and man -l --warnings render the page with nothing on stderr."""
    if shutil.which("groff") is None or shutil.which("man") is None:
        if os.environ.get("CI"):
            pytest.fail("groff and man are missing: scripts/test-deps installs them")
        pytest.skip("groff or man missing (scripts/test-deps installs them)")
    groff = subprocess.run(
        ["groff", "-man", "-ww", "-z", str(page)], capture_output=True, text=True, check=False, timeout=60
    )
    assert (groff.returncode, groff.stderr) == (0, "")
    env = {**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "0", "LC_ALL": "C.UTF-8"}
    man = subprocess.run(
        ["man", "--warnings", "-E", "UTF-8", "-l", str(page)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )
    assert (man.returncode, man.stderr) == (0, "")
    assert "NAME" in re.sub(".\b", "", man.stdout)  # overstrike bold, as a pager gets it
