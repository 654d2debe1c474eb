"""relatectl: set up and run Relate Mail."""

from __future__ import annotations

from pathlib import Path

import typer

from relate import __version__
from relatectl import alias, backup, db, dev, dkim, domain, imports, key, queue, setup, status, tls, user
from relatectl.common import state

app = typer.Typer(
    help="Set up and run Relate Mail: domains, users, keys, the database, and a dev run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(db.app, name="db")
app.add_typer(domain.app, name="domain")
app.add_typer(user.app, name="user")
app.add_typer(alias.app, name="alias")
app.add_typer(key.app, name="key")
app.add_typer(queue.app, name="queue")
app.add_typer(dkim.app, name="dkim")
app.add_typer(tls.app, name="tls")
app.add_typer(imports.app, name="import")
app.command("setup")(setup.setup)
app.command("dev")(dev.dev)
app.command("status")(status.status)
app.command("backup")(backup.backup)
app.command("restore")(backup.restore)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"relatectl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    config: Path | None = typer.Option(
        None, "--config", "-c", envvar="RELATE_CONFIG", help="Config file (default /etc/relate/relate.yaml)."
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Set up and run Relate Mail."""
    state.config_path = config


def main() -> None:
    app()
