"""The OpenAPI document: valid 3.1, the same routes and scopes as the running app, and answers that match it."""

from __future__ import annotations

import base64
import contextlib
import email.policy
import re
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from relate.api.security import scope_of
from relate.config import Config
from relate.services.setup import new_vapid_keys
from relate.store import mailboxes as mailbox_store
from tests.api.conftest import Api, message
from tests.api.test_hub import another_api, hub_client

_METHODS = {"get", "put", "post", "delete", "patch"}
# Small enough to overflow in a test, large enough for the attachments the tests send.
ATTACHMENT_LIMIT = 64 * 1024


@pytest.fixture
def api_config(api_config: Config) -> Config:
    """The test API with web push configured (VAPID keys as `relatectl setup` makes them), small attachment limit."""
    api_config.push.vapid_public_key, api_config.push.vapid_private_key = new_vapid_keys()
    api_config.api.max_attachment_size = ATTACHMENT_LIMIT
    return api_config


def _shape(path: str) -> str:
    """``/api/emails/{id}`` -> ``/api/emails/{}``: clients see no parameter names, so they do not count."""
    return re.sub(r"\{[^}]*\}", "{}", path)


async def _document(api: Api) -> dict[str, Any]:
    async with api.session.get(api.url + "/api/openapi.json") as resp:
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
        return doc


def _routed(api: Api) -> dict[tuple[str, str], Any]:
    """(method, path shape) -> handler for every route of the running app (HEAD twins of GET left out)."""
    found = {}
    for route in api.server.app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        found[(route.method.lower(), _shape(route.resource.canonical))] = route.handler
    return found


def _documented(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, _shape(path)): operation
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in _METHODS
    }


async def test_document_is_valid_openapi_31(api: Api) -> None:
    """GET /api/openapi.json is public and a valid OpenAPI 3.1 document."""
    doc = await _document(api)
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    assert "bearer" in doc["components"]["securitySchemes"]
    assert set(doc["components"]["schemas"]["Error"]["required"]) == {"error", "message"}


async def test_every_route_is_documented_and_every_documented_route_exists(api: Api) -> None:
    """The app's router and the document list the same (method, path) pairs."""
    doc = await _document(api)
    routed = set(_routed(api))
    documented = set(_documented(doc))
    undocumented = sorted(f"{m.upper()} {p}" for m, p in routed - documented)
    unrouted = sorted(f"{m.upper()} {p}" for m, p in documented - routed)
    assert not undocumented, f"served but not in the OpenAPI document: {undocumented}"
    assert not unrouted, f"in the OpenAPI document but not served: {unrouted}"


async def test_documented_scopes_match_the_handlers(api: Api) -> None:
    """Each served operation's documented security is the scope its handler requires (none for public routes)."""
    doc = await _document(api)
    documented = _documented(doc)
    wrong = []
    for key, handler in _routed(api).items():
        operation = documented.get(key)
        if operation is None:
            continue  # reported by the test above
        scope, _ = scope_of(handler)
        roles = {role for requirement in operation["security"] for roles in requirement.values() for role in roles}
        expected = set() if scope is None else {scope}
        if roles != expected:
            wrong.append(f"{key[0].upper()} {key[1]}: documented {sorted(roles)}, required {sorted(expected)}")
    assert not wrong


def _valid(doc: dict[str, Any], schema: dict[str, Any], body: Any, where: str) -> None:
    """``body`` matches ``schema`` (whose refs point into the document's components)."""
    # Refs are "#/components/...": give the validator a root that holds the components.
    validator = OAS31Validator({**schema, "components": doc["components"]})
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, f"{where}: {errors}"


def _check(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    """``status`` is documented for (path, method), and ``body`` matches its schema."""
    responses = doc["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}, not documented: {body}"
    response = responses[str(status)]
    if "$ref" in response:
        response = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    _valid(doc, response["content"]["application/json"]["schema"], body, f"{method.upper()} {path} {status}")


async def _call(
    api: Api,
    doc: dict[str, Any],
    method: str,
    url: str,
    path: str,
    expected: int,
    key: str | None = None,
    **kwargs: Any,
) -> Any:
    """One request (alice's app key by default): asserts the status, checks the answer against the document."""
    status, body = await api.call(method, url, key, **kwargs)
    assert status == expected, (method, url, status, body)
    _check(doc, path, method.lower(), status, body)
    return body


async def test_answers_match_the_documented_schemas(api: Api) -> None:
    """Real answers of the mail, key and server routes (successes and errors) validate against the document."""
    doc = await _document(api)
    (email_id,) = await api.deliver(message("Schema check", "some words to find\r\n"), "alice@example.com")
    calls: list[tuple[str, str, str, dict[str, Any]]] = [
        ("GET", "/api/mailboxes", "/api/mailboxes", {}),
        ("GET", "/api/emails?pageSize=5", "/api/emails", {}),
        ("GET", "/api/emails/search?q=words", "/api/emails/search", {}),
        ("GET", f"/api/emails/{email_id}", "/api/emails/{id}", {}),
        ("GET", "/api/emails/999999999", "/api/emails/{id}", {}),
        ("GET", "/api/emails?pageSize=1000", "/api/emails", {}),
        ("PATCH", f"/api/emails/{email_id}", "/api/emails/{id}", {"json": {"isRead": True}}),
        ("PATCH", f"/api/emails/{email_id}", "/api/emails/{id}", {"json": {"isRead": "yes"}}),
        ("GET", "/api/smtp-credentials", "/api/smtp-credentials", {}),
        ("POST", "/api/smtp-credentials", "/api/smtp-credentials", {"json": {"name": "s", "scopes": ["imap"]}}),
        ("GET", "/api/profile", "/api/profile", {}),
        ("GET", "/api/discovery", "/api/discovery", {}),
        ("GET", "/healthz", "/healthz", {}),
        ("DELETE", f"/api/emails/{email_id}", "/api/emails/{id}", {}),
    ]
    for method, url, path, kwargs in calls:
        status, body = await api.call(method, url, **kwargs)
        assert 200 <= status < 500, (method, url, status)
        _check(doc, path, method.lower(), status, body)
    # Authentication and scope errors have the documented shape too.
    status, body = await api.call("GET", "/api/mailboxes", "relate_000000000000_" + "x" * 32)
    _check(doc, "/api/mailboxes", "get", status, body)
    status, body = await api.call("GET", "/api/mailboxes", api.alice_imap)
    _check(doc, "/api/mailboxes", "get", status, body)


def _with_attachment() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Sender <sender@remote.example>"
    msg["To"] = "alice@example.com"
    msg["Subject"] = "The report"
    msg["Message-ID"] = "<report-1@remote.example>"
    msg["Date"] = "Sat, 21 Nov 2026 10:00:00 +0000"
    msg.set_content("The report is attached.\n")
    msg.add_attachment(b"%PDF-1.4 not really\n", maintype="application", subtype="pdf", filename="report.pdf")
    return msg.as_bytes(policy=email.policy.SMTP)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_outbound_answers_match_the_documented_schemas(api: Api) -> None:
    """Drafts, send, send-now, reply, forward, the three lists and their errors answer as documented."""
    doc = await _document(api)
    (original,) = await api.deliver(_with_attachment(), "alice@example.com")
    note = {"filename": "note.txt", "contentType": "text/plain", "content": _b64(b"remember the milk\n")}
    made = await _call(
        api,
        doc,
        "POST",
        "/api/outbound",
        "/api/outbound",
        201,
        json={"to": ["Bob <bob@example.com>"], "subject": "Plans", "textBody": "Let us meet.", "attachments": [note]},
    )
    one, kept = f"/api/outbound/{made['id']}", made["attachments"][0]["id"]
    saved = await _call(
        api,
        doc,
        "PUT",
        one,
        "/api/outbound/{id}",
        200,
        json={
            "from": {"email": "alice@example.com", "name": "A."},
            "cc": ["alice@example.com"],
            "attachments": [{"id": kept}],
        },
    )
    assert [a["id"] for a in saved["attachments"]] == [kept]
    await _call(api, doc, "GET", one, "/api/outbound/{id}", 200)
    drafts = await _call(api, doc, "GET", "/api/outbound/drafts", "/api/outbound/drafts", 200)
    assert [d["id"] for d in drafts["items"]] == [made["id"]]
    # Errors while it is a draft.
    await _call(api, doc, "PUT", one, "/api/outbound/{id}", 422, json={"to": ["not an address"]})
    big = {"filename": "big.bin", "content": _b64(b"x" * (ATTACHMENT_LIMIT + 1))}
    await _call(api, doc, "PUT", one, "/api/outbound/{id}", 413, json={"attachments": [big]})
    await _call(api, doc, "PUT", one, "/api/outbound/{id}", 415, data="subject", headers={"Content-Type": "text/plain"})
    json_type = {"Content-Type": "application/json"}
    await _call(api, doc, "POST", "/api/outbound", "/api/outbound", 400, data="{not json", headers=json_type)
    # Sent to local recipients: 201, delivered at once; then no longer a draft.
    sent = await _call(api, doc, "POST", one + "/send", "/api/outbound/{id}/send", 201)
    assert sent["status"] == "sent"
    assert {r["status"] for r in sent["recipients"]} == {"sent"}
    await _call(api, doc, "POST", one + "/send", "/api/outbound/{id}/send", 409)
    await _call(api, doc, "PUT", one, "/api/outbound/{id}", 409, json={"subject": "too late"})
    await _call(api, doc, "DELETE", one, "/api/outbound/{id}", 409)
    await _call(api, doc, "POST", "/api/outbound/send", "/api/outbound/send", 201, json={"to": ["bob@example.com"]})
    await _call(api, doc, "POST", "/api/outbound/send", "/api/outbound/send", 422, json={"subject": "to nobody"})
    listed = await _call(api, doc, "GET", "/api/outbound/sent", "/api/outbound/sent", 200)
    assert listed["total"] == 2
    # A reply to the remote sender, sent at once, waits in the outbox (no delivery daemon runs here).
    reply = "/api/outbound/reply/{emailId}"
    replied = await _call(api, doc, "POST", f"/api/outbound/reply/{original}?all=true", reply, 201, json={"send": True})
    assert replied["status"] == "queued"
    outbox = await _call(api, doc, "GET", "/api/outbound/outbox", "/api/outbound/outbox", 200)
    assert [o["id"] for o in outbox["items"]] == [replied["id"]]
    await _call(api, doc, "POST", "/api/outbound/reply/999999999", reply, 404)
    forward = "/api/outbound/forward/{emailId}"
    forwarded = await _call(
        api, doc, "POST", f"/api/outbound/forward/{original}", forward, 201, json={"to": ["bob@example.com"]}
    )
    assert [a["filename"] for a in forwarded["attachments"]] == ["report.pdf"]
    await _call(api, doc, "POST", f"/api/outbound/forward/{original}", forward, 422, json={"replyAll": True})
    gone = f"/api/outbound/{forwarded['id']}"
    assert await _call(api, doc, "DELETE", gone, "/api/outbound/{id}", 200) == {"deleted": True, "id": forwarded["id"]}
    await _call(api, doc, "DELETE", gone, "/api/outbound/{id}", 404)
    await _call(api, doc, "GET", "/api/outbound/999999999", "/api/outbound/{id}", 404)
    await _call(api, doc, "GET", "/api/outbound/drafts?pageSize=1000", "/api/outbound/drafts", 400)


def _device() -> dict[str, str]:
    """A browser's subscription keys: an uncompressed P-256 point and a 16-byte secret, base64url."""
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return {
        "p256dh": base64.urlsafe_b64encode(point).rstrip(b"=").decode(),
        "auth": base64.urlsafe_b64encode(b"0123456789abcdef").rstrip(b"=").decode(),
    }


async def test_push_answers_match_the_documented_schemas(api: Api, tmp_path: Path) -> None:
    """The VAPID key, subscribing (new, again, refused), listing and unsubscribing answer as documented."""
    doc = await _document(api)
    subs, one = "/api/push-subscriptions", "/api/push-subscriptions/{id}"
    key = await _call(api, doc, "GET", subs + "/vapid-public-key", subs + "/vapid-public-key", 200)
    assert key["publicKey"] == api.cfg.push.vapid_public_key
    flat = {"endpoint": "https://push.example.net/send/phone", **_device()}
    made = await _call(api, doc, "POST", subs, subs, 201, json=flat)
    again = await _call(api, doc, "POST", subs, subs, 200, json=flat | _device())
    assert again["id"] == made["id"]
    browser = {"endpoint": "https://push.example.net/send/laptop", "expirationTime": None, "keys": _device()}
    await _call(api, doc, "POST", subs, subs, 201, json=browser)
    await _call(api, doc, "POST", subs, subs, 422, json=flat | {"endpoint": "http://push.example.net/send/x"})
    await _call(api, doc, "POST", subs, subs, 422, json=flat | {"auth": "c2hvcnQ"})
    listed = await _call(api, doc, "GET", subs, subs, 200)
    assert listed["total"] == 2
    deleted = await _call(api, doc, "DELETE", f"{subs}/{made['id']}", one, 200)
    assert deleted == {"deleted": True, "id": made["id"]}
    await _call(api, doc, "DELETE", f"{subs}/{made['id']}", one, 404)
    # Without VAPID keys: 503 push_not_configured, in the documented shape.
    async with another_api(api, tmp_path, push__vapid_private_key=None, push__vapid_public_key=None) as (_, url):
        for method, path, kwargs in (
            ("GET", subs + "/vapid-public-key", {}),
            ("POST", subs, {"json": flat, "headers": api.auth(api.alice)}),
        ):
            async with api.session.request(method, url + path, **kwargs) as resp:
                assert resp.status == 503
                body = await resp.json()
            assert body["error"] == "push_not_configured"
            _check(doc, path, method.lower(), 503, body)


async def test_real_time_answers_and_events_match_the_documented_schemas(api: Api) -> None:
    """The hub's refusals and every kind of hub event match the document."""
    doc = await _document(api)
    hub_event = doc["components"]["schemas"]["HubEvent"]
    user_id = await api.pool.fetchval("SELECT id FROM users WHERE address = 'alice@example.com'")
    seen: dict[str, dict[str, Any]] = {}
    async with hub_client(api) as alice:
        (email_id,) = await api.deliver(message("Real time"), "alice@example.com")

        async def collect(kinds: set[str]) -> None:
            deadline = time.monotonic() + 10
            while not kinds <= set(seen) and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    event = await alice.next(wait=max(0.01, deadline - time.monotonic()))
                    _valid(doc, hub_event, event, f"hub event {event}")
                    seen[event["type"]] = event["data"]

        # Changes that make the other events: read, delete (a move to Trash, then out of it), send, make and rename a
        # folder, a bulk action.
        await _call(api, doc, "PATCH", f"/api/emails/{email_id}", "/api/emails/{id}", 200, json={"isRead": True})
        # The hub reads a flag change's rows when it handles it: moved away by then, they make no EmailUpdated.
        await collect({"EmailUpdated"})
        await _call(api, doc, "DELETE", f"/api/emails/{email_id}", "/api/emails/{id}", 200)
        await collect({"EmailMoved"})
        await _call(api, doc, "DELETE", f"/api/emails/{email_id}", "/api/emails/{id}", 200)  # out of Trash
        await _call(api, doc, "POST", "/api/outbound/send", "/api/outbound/send", 201, json={"to": ["bob@example.com"]})
        async with api.pool.acquire() as conn:
            await mailbox_store.create(conn, user_id, "Projects")
            await mailbox_store.rename(conn, user_id, "Projects", "Old projects")
        bulk = {"action": "markUnread", "query": {}}
        await _call(api, doc, "POST", "/api/emails/bulk", "/api/emails/bulk", 200, json=bulk)
        kinds = {"NewEmail", "EmailUpdated", "EmailMoved", "EmailDeleted", "UnreadCountChanged"}
        kinds |= {"DeliveryStatusChanged", "Resync", "MailboxChanged", "BulkChanged"}
        await collect(kinds)
        assert set(seen) == kinds
    assert seen["Resync"]["reason"] == "mailboxes"
    # The hub's refusals: no Upgrade, no valid key, a key without api:read.
    await _call(api, doc, "GET", "/hubs/email", "/hubs/email", 400)
    await _call(api, doc, "GET", "/hubs/email", "/hubs/email", 401, "relate_000000000000_" + "x" * 32)
    await _call(api, doc, "GET", "/hubs/email", "/hubs/email", 403, api.alice_imap)
