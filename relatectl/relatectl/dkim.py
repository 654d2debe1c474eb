"""relatectl dkim: keys that sign outbound mail."""

from __future__ import annotations

import asyncpg
import typer

from relate.mail.dkim import DkimKey
from relate.services import dns as dns_service
from relatectl.common import JsonOption, console, err_console, print_json, with_pool

app = typer.Typer(help="DKIM keys that sign outbound mail.", no_args_is_help=True)


@app.command("keygen")
def keygen(
    domain: str = typer.Argument(..., help="A hosted domain."),
    algorithm: str = typer.Option("rsa", "--algorithm", help="rsa (2048 bits) or ed25519."),
    selector: str | None = typer.Option(None, "--selector", help="Selector (default: relateYYYYMM)."),
    as_json: bool = JsonOption,
) -> None:
    """Make a new DKIM key for DOMAIN, sign its outbound mail with it, and print the DNS record."""

    async def go(pool: asyncpg.Pool) -> DkimKey:
        return await dns_service.dkim_keygen(pool, domain, kind=algorithm.lower(), selector=selector)

    key = with_pool(go)
    name = f"{key.selector}._domainkey.{domain.lower()}."
    if as_json:
        print_json({"name": name, "type": "TXT", "value": key.txt_record(), "algorithm": key.algorithm})
        return
    err_console.print(f"publish this TXT record, then mail from {domain.lower()} is signed with it:", highlight=False)
    console.print(f"{name} TXT {dns_service.txt_strings(key.txt_record())}", highlight=False, markup=False)
