"""The route modules the API serves, in one list (the OpenAPI test walks it)."""

from __future__ import annotations

from types import ModuleType

from relate.api import content, export, folders, hub, keys, mail, meta, oidc, openapi, outbound, prefs, push, senders

ROUTE_MODULES: tuple[ModuleType, ...] = (
    folders,
    mail,
    outbound,
    keys,
    meta,
    openapi,
    hub,
    push,
    senders,
    oidc,
    prefs,
    export,
    content,
)
