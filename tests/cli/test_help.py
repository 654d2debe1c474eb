"""relatectl's help as an admin reads it: what to type (ADDRESS, --storage SIZE), never Python's types.

And the command tree loads one noun at a time: `relatectl --help` and the
completion of a noun import no command module.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from relatectl import cli
from relatectl.main import app

# What typer 0.29 prints for a parameter when left to itself: <str>, <bool>, <int range>, <list[str]>,
# <path>, and {address} for a required argument in the usage line.
PYTHON_TYPE = re.compile(r"<[a-z][a-z \[\]|,]*>")
BRACED = re.compile(r"\{[a-z_]+\}")


def every_command() -> Iterator[tuple[list[str], Any]]:
    """(path, click command) of relatectl itself, each noun, and each command under it."""

    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        yield path, cmd
        if isinstance(cmd, TyperGroup):
            ctx = typer.Context(cmd)
            for name in cmd.list_commands(ctx):
                yield from walk(cmd.get_command(ctx, name), [*path, name])

    yield from walk(typer.main.get_command(app), [])


PATHS = [path for path, _ in every_command()]


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) or "relatectl" for p in PATHS])
def test_help_shows_what_to_type(path: list[str]) -> None:
    """`relatectl ... --help` at 80 columns: no <str>, <bool> or {user}; arguments in capitals as in the usage."""
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert not PYTHON_TYPE.search(out), out
    assert not BRACED.search(out), out
    usage = next(line for line in out.splitlines() if "Usage:" in line)
    for word in usage.split()[2 + len(path) :]:
        assert re.fullmatch(r"\[?(OPTIONS|COMMAND|ARGS|[A-Z][A-Z_]*(\|-)?)(\.\.\.)?\]?(\.\.\.)?", word), usage


def test_options_show_their_metavar_and_flags_none() -> None:
    """`user quota --help` names --storage SIZE and --messages N, and a flag (--none) with no value."""
    out = CliRunner().invoke(app, ["user", "quota", "--help"], env={"COLUMNS": "100", "NO_COLOR": "1"}).stdout
    assert re.search(r"user quota \[OPTIONS\] ADDRESS *$", out, re.M), out
    assert re.search(r"--storage\s+SIZE\s", out), out
    assert re.search(r"--messages\s+N\s", out), out
    assert re.search(r"--none\s+No limit", out), out
    out = CliRunner().invoke(app, ["queue", "delete", "--help"], env={"COLUMNS": "100", "NO_COLOR": "1"}).stdout
    assert "queue delete [OPTIONS] [ID...]" in out


def test_the_nouns_short_help_is_their_own() -> None:
    """The list of `relatectl --help` (kept in relatectl.cli.COMMANDS, to import nothing) says what each noun's
    own help says."""
    group = typer.main.get_command(app)
    assert isinstance(group, cli.Group)
    for name, (_, _, short) in cli.COMMANDS.items():
        command = group.load(name)
        assert (command.help or "").split("\n\n")[0].replace("\n", " ") == short, name


def _imported_after(*argv: str, **env: str) -> set[str]:
    """The relatectl and service modules a fresh relatectl process has run after ``argv`` (a module imported
    with lazy_module and never used is not counted)."""
    script = (
        "import sys\n"
        f"sys.argv = {['relatectl', *argv]!r}\n"
        "from relatectl.launch import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "names = [n for n, m in sys.modules.items() if n.startswith(('relatectl.', 'relate.services', 'pydantic'))"
        " and type(m).__name__ != '_LazyModule']\n"
        "print(' '.join(names), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return set(done.stderr.split())


def test_help_and_noun_completion_import_no_command_module() -> None:
    """`relatectl --help` and completing a noun load no noun's module; `relatectl user --help` loads only user's,
    and not the services it runs, nor pydantic."""
    nouns = {f"relatectl.{name}" for name in cli.COMMANDS}
    assert not _imported_after("--help") & nouns
    assert not _imported_after(_RELATECTL_COMPLETE="complete_bash", COMP_WORDS="relatectl d", COMP_CWORD="1") & nouns
    loaded = _imported_after("user", "--help")
    assert loaded & nouns == {"relatectl.user"}
    assert "relate.services.accounts" not in loaded
    # Nor pydantic, which typer 0.29 would import to convert any value (relatectl.cli converts text itself).
    assert "pydantic" not in loaded
    completing = _imported_after(
        _RELATECTL_COMPLETE="complete_bash", COMP_WORDS="relatectl key revoke ", COMP_CWORD="3"
    )
    assert "pydantic" not in completing
