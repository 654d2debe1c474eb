"""relatectl dkim: keys that sign outbound mail, and their rotation.

A domain's first key signs at once. A later one (``keygen`` again, the
rotation) is *pending*: the current key keeps signing until the new record is
seen in DNS, which the delivery daemon checks every ten minutes (or
``dkim activate``, which looks it up at once); the key it replaces stays as
*previous*, its record still useful while mail it signed is verified, until
``dkim retire``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from relate.mail.address import comparable_domain, domain_to_unicode
from relatectl import complete
from relatectl.cli import App, JsonOption, lazy_module
from relatectl.common import console, err_console, load_config, print_json, print_rows, with_pool

if TYPE_CHECKING:
    import asyncpg

    from relate.mail.dkim import DkimKey
    from relate.services import dns as dns_service
else:
    dns_service = lazy_module("relate.services.dns")

app = App(help="DKIM keys that sign outbound mail: make, list, activate, retire.")
Domain = typer.Argument(..., help="A hosted domain.", metavar="DOMAIN", autocompletion=complete.domains)
Selector = typer.Argument(
    ..., help="The key's selector (see `dkim list`).", metavar="SELECTOR", autocompletion=complete.selectors
)


@app.command("keygen")
def keygen(
    domain: str = Domain,
    algorithm: str = typer.Option(
        "rsa", "--algorithm", autocompletion=complete.comma_list(["rsa", "ed25519"]), help="rsa (2048 bits) or ed25519."
    ),
    selector: str | None = typer.Option(None, "--selector", help="Selector (default: relateYYYYMMDD)."),
    as_json: bool = JsonOption,
) -> None:
    """Make a new DKIM key for DOMAIN and print its DNS record; it signs at once if DOMAIN has no key, else
    when its record is seen in DNS (the current key signs until then)."""

    async def go(pool: asyncpg.Pool) -> tuple[DkimKey, str]:
        return await dns_service.dkim_keygen(pool, domain, kind=algorithm.lower(), selector=selector)

    key, state = with_pool(go)
    name = f"{key.selector}._domainkey.{comparable_domain(domain)}."  # DNS wants the A-label
    if as_json:
        print_json({"name": name, "type": "TXT", "value": key.txt_record(), "algorithm": key.algorithm, "state": state})
        return
    if state == "active":
        err_console.print(
            f"publish this TXT record, then mail from {domain.lower()} is signed with it:", highlight=False
        )
    else:
        err_console.print(
            f"publish this TXT record; the current key signs {domain.lower()}'s mail until the delivery daemon sees "
            f"it in DNS (it looks every 10 minutes; `relatectl dkim activate {domain.lower()} {key.selector}` looks "
            "now):",
            highlight=False,
        )
    console.print(f"{name} TXT {dns_service.txt_strings(key.txt_record())}", highlight=False, markup=False)


@app.command("list")
def list_cmd(
    domain: str | None = typer.Argument(
        None, help="Only this domain's keys.", metavar="DOMAIN", autocompletion=complete.domains
    ),
    as_json: bool = JsonOption,
) -> None:
    """Every DKIM key with its state: active (signs), pending (waits for its DNS record), previous (replaced)."""

    async def go(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return await dns_service.dkim_keys(pool, domain)

    rows = with_pool(go)
    for row in rows:
        row.pop("public_key")
        if not as_json:
            row["domain"] = domain_to_unicode(row["domain"])
    print_rows(
        rows,
        [
            ("domain", "Domain"),
            ("selector", "Selector"),
            ("algorithm", "Algorithm", 2),
            ("state", "State"),
            ("created_at", "Created", 3),
            ("activated_at", "Signing since", 1),
            ("checked_at", "DNS checked", 1),
        ],
        as_json=as_json,
        title="DKIM keys",
    )


@app.command("activate")
def activate(
    domain: str = Domain,
    selector: str = Selector,
    force: bool = typer.Option(False, "--force", help="Even if its record is not seen in DNS."),
) -> None:
    """Make a key sign DOMAIN's mail now, once its record is seen in DNS (the signing key becomes previous)."""
    from relate.mailauth.dns import Dns
    from relate.runtime.resolver import make_resolver

    cfg = load_config()
    dns = Dns(make_resolver(cfg.delivery))

    async def go(pool: asyncpg.Pool) -> str:
        return await dns_service.dkim_activate(pool, dns, domain, selector, force=force)

    before = with_pool(go, cfg=cfg)
    if before == "active":
        console.print(f"{selector} already signs {domain.lower()}'s mail", highlight=False)
    else:
        console.print(f"{selector} signs {domain.lower()}'s mail from now on", highlight=False)


@app.command("retire")
def retire(
    domain: str = Domain,
    selector: str = Selector,
) -> None:
    """Delete a key that does not sign (previous or pending); then remove its TXT record from DNS."""

    async def go(pool: asyncpg.Pool) -> None:
        await dns_service.dkim_retire(pool, domain, selector)

    with_pool(go)
    record = f"{selector}._domainkey.{comparable_domain(domain)}."
    console.print(f"retired {selector}; remove {record} TXT from DNS", highlight=False)
