"""The OpenAPI document: valid 3.1, the same routes and scopes as the running app, and answers that match it."""

from __future__ import annotations

import re
from typing import Any

from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from relate.api.security import scope_of
from tests.api.conftest import Api, message

_METHODS = {"get", "put", "post", "delete", "patch"}


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


def _check(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    """``body`` matches the schema documented for (path, method, status)."""
    response = doc["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    # Refs are "#/components/...": give the validator a root that holds the components.
    validator = OAS31Validator({**schema, "components": doc["components"]})
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, f"{method.upper()} {path} {status}: {errors}"


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
