"""What the server is and how to reach it: profile, discovery, health, and mail client autoconfiguration.

Policy:

- ``GET /api/profile`` (``api:read``) tells the caller who they are: the
  primary address, the aliases that deliver to them, the display name, the
  scopes of the key in use, and their quota (usage and limits of bytes and
  messages, every folder; a null limit is none; store/quota.py).
- ``GET /api/discovery``, ``GET /healthz`` and the autoconfig documents are
  public: they reveal nothing a port scan or an MX lookup would not. The
  health check never says more than "reachable" about the database (no
  error text, which could carry a host name or a user).
- Connection settings (for ``/api/discovery``, the key-creation answer and
  autoconfig) come from the configuration, as services/clients.py says.
- ``GET /.well-known/mta-sts.txt`` with ``Host: mta-sts.DOMAIN`` serves
  our MTA-STS policy (RFC 8461 §3.2) for a hosted DOMAIN, from the
  ``mta_sts`` section of the configuration (mode, mx, max_age; mx defaults
  to ``hostname``); 404 when ``mta_sts.mode`` is none or the domain is not
  hosted. RFC 8461 wants it over HTTPS with a certificate for that name:
  the proxy in front of relate-api terminates TLS and passes Host on.
- Autoconfig answers only for hosted domains (404 otherwise, so it cannot be
  used to make the server vouch for someone else's domain) and never says
  whether the address itself exists.
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET

import asyncpg
from aiohttp import web

import relate
from relate.api.app import state
from relate.api.errors import bad_request, not_found
from relate.api.security import READ, principal, requires
from relate.config import Config
from relate.errors import RelateError
from relate.mail.address import normalize_address, split_address
from relate.mail.mtasts import Policy
from relate.services import accounts as account_service
from relate.services.clients import client_servers, public_hostname
from relate.store import accounts, heartbeats
from relate.store.db import DatabaseUnavailable

log = logging.getLogger("relate.api")

routes = web.RouteTableDef()

# The health check gives up on the database after this long (a load balancer's probe is short).
HEALTH_TIMEOUT = 3.0

# Mozilla ISPDB's names for the two kinds of TLS.
_SOCKET_TYPE = {"tls": "SSL", "starttls": "STARTTLS"}


# --- profile ------------------------------------------------------------------


@routes.get("/api/profile")
@requires(READ)
async def profile(request: web.Request) -> web.Response:
    who = principal(request)
    pool = state(request).pool
    user = await account_service.get_user(pool, who.address)
    addresses = await accounts.user_addresses(pool, who.user_id)
    aliases = sorted(addresses - {user["address"]})
    quota = await account_service.user_quota(pool, who.user_id, state(request).cfg.quota)
    return web.json_response(
        {
            "id": user["id"],
            "address": user["address"],
            "displayName": user["display_name"],
            "aliases": aliases,
            "addresses": [user["address"], *aliases],
            "key": {
                "id": who.key_id,
                "scopes": sorted(who.scopes),
                "expiresAt": None if who.expires_at is None else who.expires_at.isoformat(),
            },
            "quota": {
                "storage": quota["storage"],
                "messages": quota["messages"],
                "full": quota["full"],
                "fullSince": None if quota["full_since"] is None else quota["full_since"].isoformat(),
            },
        }
    )


# --- discovery ----------------------------------------------------------------


def _routed(app: web.Application, path: str) -> bool:
    return any(resource.canonical == path for resource in app.router.resources())


@routes.get("/api/discovery")
async def discovery(request: web.Request) -> web.Response:
    cfg = state(request).cfg
    servers = client_servers(cfg)
    push_keys = bool(cfg.push.vapid_public_key and cfg.push.vapid_private_key)
    return web.json_response(
        {
            "name": "Relate Mail",
            "version": relate.__version__,
            "hostname": public_hostname(cfg),
            "protocols": {name: {"enabled": bool(ports), "ports": ports} for name, ports in servers.items()},
            "features": {
                "search": True,
                "outbound": _routed(request.app, "/api/outbound"),
                "webSocket": _routed(request.app, "/hubs/email"),
                "push": push_keys and _routed(request.app, "/api/push-subscriptions"),
                "autoconfig": True,
            },
            "endpoints": {
                "openapi": "/api/openapi.json",
                "hub": "/hubs/email",
                "health": "/healthz",
                "autoconfig": "/.well-known/autoconfig/mail/config-v1.1.xml",
            },
        }
    )


# --- health -------------------------------------------------------------------


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    st = state(request)
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT), st.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
            by_status = await heartbeats.queue_depth(conn)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, DatabaseUnavailable) as exc:
        log.warning("healthz database=unreachable error=%s", type(exc).__name__)
        return web.json_response(
            {"status": "unavailable", "database": "unreachable", "version": relate.__version__},
            status=503,
            headers={"Cache-Control": "no-store"},
        )
    waiting = {status: by_status.get(status, 0) for status in ("queued", "sending", "held")}
    return web.json_response(
        {
            "status": "ok",
            "database": "reachable",
            "version": relate.__version__,
            "queue": {"depth": sum(waiting.values()), **waiting},
        },
        headers={"Cache-Control": "no-store"},
    )


# --- Thunderbird autoconfig -----------------------------------------------------


def autoconfig_xml(cfg: Config, domain: str) -> bytes:
    """The Mozilla ISPDB ``clientConfig`` 1.1 document for ``domain`` (ElementTree escapes every value)."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    ET.SubElement(provider, "domain").text = domain
    ET.SubElement(provider, "displayName").text = f"{domain} (Relate Mail)"
    ET.SubElement(provider, "displayShortName").text = domain
    host = public_hostname(cfg)
    servers = client_servers(cfg)
    for protocol in ("imap", "pop3", "smtp"):
        tag = "outgoingServer" if protocol == "smtp" else "incomingServer"
        for server in servers[protocol]:
            element = ET.SubElement(provider, tag, type=protocol)
            ET.SubElement(element, "hostname").text = host
            ET.SubElement(element, "port").text = str(server["port"])
            ET.SubElement(element, "socketType").text = _SOCKET_TYPE[server["security"]]
            ET.SubElement(element, "authentication").text = "password-cleartext"
            ET.SubElement(element, "username").text = "%EMAILADDRESS%"
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body + b"\n"


# RFC 8461 §3.2 (the policy file), §3.3 (served at mta-sts.DOMAIN)
@routes.get("/.well-known/mta-sts.txt")
async def mta_sts_policy(request: web.Request) -> web.Response:
    cfg = state(request).cfg
    host = (request.url.host or "").lower().rstrip(".")
    prefix = "mta-sts."
    domain = host[len(prefix) :] if host.startswith(prefix) else ""
    if cfg.mta_sts.mode == "none" or not domain or await accounts.get_domain(state(request).pool, domain) is None:
        raise not_found("MTA-STS policy")
    mx = tuple(m.lower() for m in cfg.mta_sts.mx) or (cfg.hostname.lower().rstrip("."),)
    policy = Policy(cfg.mta_sts.mode, mx, cfg.mta_sts.max_age)
    return web.Response(text=policy.text(), content_type="text/plain", headers={"Cache-Control": "max-age=3600"})


@routes.get("/.well-known/autoconfig/mail/config-v1.1.xml")
@routes.get("/mail/config-v1.1.xml")
async def autoconfig(request: web.Request) -> web.Response:
    raw = request.query.get("emailaddress", "").strip()
    if not raw:
        raise bad_request("emailaddress is required")
    if len(raw) > 320:
        raise bad_request("emailaddress is too long")
    try:
        _, domain = split_address(normalize_address(raw))
    except (RelateError, ValueError):
        raise bad_request("emailaddress is not a valid address") from None
    if await accounts.get_domain(state(request).pool, domain) is None:
        raise not_found("domain")
    return web.Response(
        body=autoconfig_xml(state(request).cfg, domain),
        content_type="application/xml",
        charset="utf-8",
        headers={"Cache-Control": "max-age=3600"},
    )
