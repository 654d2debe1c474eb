"""relatectl domain: the domains this server hosts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text

from relate.mail.address import domain_to_unicode
from relatectl import complete
from relatectl.cli import App, JsonOption, lazy_module
from relatectl.common import console, load_config, print_json, print_rows, print_table, shown_domain, with_pool

if TYPE_CHECKING:
    import asyncpg

    from relate.services import accounts, domain_check
    from relate.services import dns as dns_service
else:
    accounts = lazy_module("relate.services.accounts")
    domain_check = lazy_module("relate.services.domain_check")
    dns_service = lazy_module("relate.services.dns")

app = App(help="Hosted domains.")
HostedDomain = typer.Argument(..., help="A hosted domain.", metavar="DOMAIN", autocompletion=complete.domains)


@app.command("add")
def add(name: str = typer.Argument(..., help="Domain name, e.g. example.com or münchen.de.", metavar="DOMAIN")) -> None:
    """Host a domain: mail for its known addresses is accepted."""

    async def go(pool: asyncpg.Pool) -> dict[str, Any]:
        return await accounts.add_domain(pool, name)

    row = with_pool(go)
    console.print(f"added domain {shown_domain(row['name'])}", highlight=False)


@app.command("list")
def list_cmd(as_json: bool = JsonOption) -> None:
    """List hosted domains with their user and alias counts."""

    async def go(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return await accounts.list_domains(pool)

    rows = with_pool(go)
    if not as_json:
        for row in rows:
            row["name"] = domain_to_unicode(row["name"])
    print_rows(
        rows,
        [("name", "Domain"), ("users", "Users"), ("aliases", "Aliases"), ("created_at", "Created", 1)],
        as_json=as_json,
        title="Domains",
    )


@app.command("remove")
def remove(name: str = HostedDomain) -> None:
    """Stop hosting a domain. Refused while it still has users or aliases."""

    async def go(pool: asyncpg.Pool) -> None:
        await accounts.remove_domain(pool, name)

    with_pool(go)
    console.print(f"removed domain {name.strip().lower()}", highlight=False)


@app.command("dns")
def dns(name: str = HostedDomain, as_json: bool = JsonOption) -> None:
    """Print the DNS records to publish for a domain: MX, SPF, DKIM, DMARC, autoconfig and SRV."""
    cfg = load_config()

    async def go(pool: asyncpg.Pool) -> list[dict[str, str]]:
        return await dns_service.records(pool, cfg, name)

    rows = with_pool(go, cfg=cfg)
    if as_json:
        print_json(rows)
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        console.print(f"{r['name']:<{width}}  3600  IN  {r['type']:<5}  {r['value']}", highlight=False, markup=False)


_STYLE = {"ok": "green", "warn": "bold yellow", "fail": "bold red", "skip": "dim"}


@app.command("check")
def check(name: str = HostedDomain, as_json: bool = JsonOption) -> None:
    """Check a domain's live DNS and this host's certificate: MX, SPF, DKIM, DMARC, reverse DNS, MTA-STS, TLS-RPT.

    Each problem comes with the record to publish (or what to run), in the
    order to fix them. Lookups use delivery.dns_servers; the outbound addresses
    are delivery.outbound_addresses, else what the host name resolves to.
    Exit status 1 when a check fails (warnings alone: 0).
    """
    cfg = load_config()

    async def go(pool: asyncpg.Pool) -> domain_check.Report:
        return await domain_check.check_domain(pool, cfg, name)

    report = with_pool(go, cfg=cfg)
    if as_json:
        print_json(report.as_dict())
    else:
        _print_report(report)
    if report.failed:
        raise typer.Exit(1)


def _print_report(report: domain_check.Report) -> None:
    sending = ", ".join(report.addresses) or "unknown addresses"
    print_table(
        f"{report.domain}: mail set-up for {report.host} (sending from {sending})",
        [("check", "Check"), ("state", "State"), ("found", "Found"), ("problem", "Problem")],
        [
            [Text(c.check), Text(c.state, style=_STYLE[c.state]), Text(c.found), Text(c.problem or "-")]
            for c in report.checks
        ],
    )
    todo = report.fix_first
    if not todo:
        console.print(f"nothing to fix: {report.domain} is set up for mail to and from {report.host}", highlight=False)
        return
    console.print("Fix first:", style="bold")
    for i, c in enumerate(todo, 1):
        console.print(Text(f"{i}. {c.check} ({c.state}): {c.problem}"))
        for line in c.fix.splitlines():
            console.print(Text(f"   {line}"))
