"""relatectl: set up and run Relate Mail.

The nouns (``domain``, ``user``, ...) are listed in relatectl.cli.COMMANDS and
imported only when used; a new one is added there.
"""

from __future__ import annotations

from pathlib import Path

import typer

from relate import __version__
from relatectl.cli import Group, state

app = typer.Typer(
    cls=Group,
    help="Set up and run Relate Mail: domains, users, keys, the database, and a dev run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"relatectl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        envvar="RELATE_CONFIG",
        metavar="FILE",
        help="Config file (default /etc/relate/relate.yaml).",
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Set up and run Relate Mail."""
    state.config_path = config


def main() -> None:
    app()
