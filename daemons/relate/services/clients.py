"""How a mail client reaches this server: the host name, and the ports and security of each protocol a client uses.

Policy: the settings come from the configuration. The host is
``api.public_hostname`` or ``hostname``; each port is the first port of the
role's ``listen`` items, and a role whose list is empty (or that is switched
off) is not offered. The roles a mail client uses are IMAP (993 implicit TLS,
143 STARTTLS), POP3 (995, 110) and submission (465 implicit TLS, 587
STARTTLS), preferred in that order; the MX port is not for clients.
Usernames are the full address. The REST API shows these in discovery,
autoconfig and the answer that creates a key.
"""

from __future__ import annotations

from typing import Any

from relate.config import Config, ListenerConfig, parse_listen

# (protocol, config role, security) in the order mail clients should prefer them.
_ROLES: tuple[tuple[str, str, str], ...] = (
    ("imap", "imaps", "tls"),
    ("imap", "imap", "starttls"),
    ("pop3", "pop3s", "tls"),
    ("pop3", "pop3", "starttls"),
    ("smtp", "submissions", "tls"),
    ("smtp", "submission", "starttls"),
)


def public_hostname(cfg: Config) -> str:
    return cfg.api.public_hostname or cfg.hostname


def _listener(cfg: Config, role: str) -> ListenerConfig:
    listeners: dict[str, ListenerConfig] = {
        "imap": cfg.imap.imap,
        "imaps": cfg.imap.imaps,
        "pop3": cfg.pop3.pop3,
        "pop3s": cfg.pop3.pop3s,
        **cfg.smtp.listeners(),
    }
    return listeners[role]


def _port(listener: ListenerConfig) -> int | None:
    """The first port of the role's listen items, or None when the role is off."""
    for item in listener.listen:
        try:
            return parse_listen(item)[1]
        except ValueError:
            continue
    return None


def client_servers(cfg: Config) -> dict[str, list[dict[str, Any]]]:
    """``{"imap": [{"port", "security"}...], "pop3": [...], "smtp": [...]}``, preferred first; off roles left out."""
    found: dict[str, list[dict[str, Any]]] = {"imap": [], "pop3": [], "smtp": []}
    off = set(cfg.disabled_listeners())  # switched off in config (smtp.enabled, imap.imaps.enabled, ...)
    for protocol, role, security in _ROLES:
        if f"{protocol}.{role}" in off:
            continue
        port = _port(_listener(cfg, role))
        if port is not None:
            found[protocol].append({"port": port, "security": security})
    return found


def connection_settings(cfg: Config, address: str) -> dict[str, Any]:
    """What a mail client needs besides the key: host, ports and the username (the address)."""
    return {"hostname": public_hostname(cfg), "username": address, **client_servers(cfg)}
