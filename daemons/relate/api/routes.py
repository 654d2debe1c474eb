"""The route modules the API serves, in one list (the OpenAPI test walks it)."""

from __future__ import annotations

from types import ModuleType

from relate.api import (
    content,
    export,
    folders,
    hub,
    keys,
    labels,
    mail,
    meta,
    openapi,
    outbound,
    prefs,
    push,
    reference,
    senders,
    threads,
)

ROUTE_MODULES: tuple[ModuleType, ...] = (mail, outbound, keys, meta, openapi, hub, push, senders, folders)
# Issue 17's features for the apps: preferences, export, cid: parts, the reference page.
ROUTE_MODULES += (prefs, export, content, reference)
# Issue 17: labels.
ROUTE_MODULES += (labels,)
ROUTE_MODULES += (threads,)  # issue 17: conversations
