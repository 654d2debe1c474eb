"""Bad input gets a 4xx with the usual error body, never a 500 or a traceback: NUL, odd line breaks, deep JSON."""

from __future__ import annotations

import base64
import email.policy
import logging
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

import pytest

from relate.mail.mime import parse_message
from tests.api.conftest import Api, message, operations


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test here also checks that nothing was logged at ERROR (an api-error line is a traceback)."""
    caplog.set_level(logging.WARNING)
    yield
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def is_error(status: int, body: Any, *expected: int) -> bool:
    """The status is one of ``expected`` and the body is the documented {"error", "message"} shape."""
    return (
        status in expected
        and isinstance(body, dict)
        and set(body) == {"error", "message"}
        and all(isinstance(v, str) and v for v in body.values())
    )


async def post_raw(api: Api, path: str, data: bytes, method: str = "POST") -> tuple[int, Any]:
    return await api.call(method, path, data=data, headers={"Content-Type": "application/json"})


async def test_nul_in_every_query_parameter_is_400(api: Api) -> None:
    """Every query parameter of every documented route, given %00, answers 400 (it reached PostgreSQL: 500)."""
    (email_id,) = await api.deliver(message(), "alice@example.com")
    _, doc = await api.call("GET", "/api/openapi.json")
    tried = 0
    for op in operations(doc):
        concrete = op.path.replace("{emailId}", str(email_id)).replace("{id}", str(email_id)).replace("{n}", "0")
        for param in op.parameters:
            if param["in"] != "query" or param["name"] == "access_token":
                continue
            status, body = await api.call(op.method, f"{concrete}?{param['name']}=%00x")
            assert is_error(status, body, 400), (op.method, op.path, param["name"], status, body)
            tried += 1
    assert tried >= 15  # mailbox, q, from, to, after, before, page, pageSize, emailaddress, all, ...


@pytest.mark.parametrize("value", ["%00", "%ED%A0%80"])
async def test_nul_in_a_path_parameter_is_a_client_error(api: Api, value: str) -> None:
    """A path parameter holding NUL or an encoded lone surrogate is a 4xx, not a 500."""
    for path in [f"/api/emails/{value}", f"/api/outbound/{value}", f"/api/emails/1/attachments/{value}"]:
        status, body = await api.call("GET", path)
        assert is_error(status, body, 400, 404), (path, status, body)


@pytest.mark.parametrize("ref", ["99999999999999999999999", "9" * 5000, "²", "١٢"])
async def test_a_mailbox_id_no_mailbox_can_have_is_404(api: Api, ref: str) -> None:
    """Digits past bigint, thousands of them, or non-ASCII digits name no mailbox: 404, in a query and a PATCH."""
    (email_id,) = await api.deliver(message(), "alice@example.com")
    status, body = await api.call("GET", f"/api/emails?mailbox={quote(ref)}")
    assert is_error(status, body, 404), body
    status, body = await api.call("PATCH", f"/api/emails/{email_id}", json={"mailbox": ref})
    assert is_error(status, body, 404), body
    status, body = await api.call("PATCH", f"/api/emails/{email_id}", json={"mailbox": 10**30})
    assert is_error(status, body, 404), body


@pytest.mark.parametrize(
    "query", ["after=0001-01-01T00:00:00%2B14:00", "before=9999-12-31T23:59:59-14:00", "after=2026-13-01"]
)
async def test_dates_past_the_calendar_are_400(api: Api, query: str) -> None:
    """A search date that is before year 1 or after 9999 once in UTC is a 400 (it was a 500 from the driver)."""
    status, body = await api.call("GET", f"/api/emails/search?{query}")
    assert is_error(status, body, 400), body


@pytest.mark.parametrize("odd", ["\u2028", "\u2029", "\x85", "\x9b", "\n", "\x0b"])
async def test_line_breaks_in_a_subject_or_display_name_are_422(api: Api, odd: str) -> None:
    """U+2028, U+2029, NEL and other controls in a subject or name are refused (422) by every write, not a 500."""
    (draft_id,) = [(await api.call("POST", "/api/outbound", json={"to": ["bob@example.com"]}))[1]["id"]]
    bodies = [
        {"subject": f"a{odd}b"},
        {"to": [{"email": "bob@example.com", "name": f"Bob{odd}Smith"}]},
        {"to": [f"Bob{odd}Smith <bob@example.com>"]},
        {"from": {"email": "alice@example.com", "name": f"A{odd}"}},
        {"attachments": [{"filename": f"a{odd}.txt", "content": base64.b64encode(b"x").decode()}]},
    ]
    for fields in bodies:
        for method, path in [
            ("POST", "/api/outbound"),
            ("PUT", f"/api/outbound/{draft_id}"),
            ("POST", "/api/outbound/send"),
        ]:
            status, body = await api.call(method, path, json={"to": ["bob@example.com"], **fields})
            assert is_error(status, body, 422), (method, path, fields, status, body)


async def test_replying_to_mail_with_line_breaks_in_its_subject_and_names_works(api: Api) -> None:
    """A received subject and From name holding U+2028/NEL (encoded words) make a well-formed reply and forward."""
    subject = "=?utf-8?b?" + base64.b64encode("Plan\u2028B\x85now".encode()).decode() + "?="
    sender = "=?utf-8?b?" + base64.b64encode("Eve\u2028Smith".encode()).decode() + "?= <eve@remote.example>"
    raw = (
        f"From: {sender}\r\nTo: alice@example.com\r\nSubject: {subject}\r\n"
        "Message-ID: <odd@remote.example>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n\r\nHello\r\n"
    ).encode()
    (email_id,) = await api.deliver(raw, "alice@example.com")
    for path in [f"/api/outbound/reply/{email_id}", f"/api/outbound/forward/{email_id}"]:
        status, draft = await api.call("POST", path, json={})
        assert status == 201, draft
        async with api.session.get(
            f"{api.url}/api/emails/{draft['draftEmailId']}/raw", headers=api.auth(api.alice)
        ) as resp:
            composed = await resp.read()
        parsed = email.message_from_bytes(composed, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        assert parse_message(composed).subject in ("Re: Plan B now", "Fwd: Plan B now")
        if path.startswith("/api/outbound/reply"):
            assert parse_message(composed).to[0].name == "Eve Smith"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"[" * 100_000 + b"]" * 100_000, 400),
        (b'{"subject": ' + b"[" * 40 + b"]" * 40 + b"}", 400),
        (b'{"to": [' + b"0," * 20_000 + b"0]}", 413),
        (b'{"subject": "\\u0000"}', 400),
        (b'{"subject\\ud800": 1}', 400),
        (b'{"subject": NaN}', 400),
        (b'{"subject": "caf\xe9"}', 400),
        (b'["not", "an", "object"]', 400),
        (b'{"subject": ' + b"1" * 5000 + b"}", 400),
    ],
)
async def test_hostile_json_bodies_are_refused_before_they_cost(api: Api, data: bytes, status: int) -> None:
    """Deep nesting, a flood of values, NUL, lone surrogates, NaN, Latin-1, a non-object: 400 or 413 on every write."""
    for method, path in [("POST", "/api/outbound"), ("POST", "/api/outbound/send"), ("PATCH", "/api/emails/1")]:
        got, body = await post_raw(api, path, data, method)
        assert is_error(got, body, status), (path, got, body)


async def test_json_nested_to_the_bound_still_parses(api: Api) -> None:
    """A body nesting exactly api.max_json_depth levels gets past the parser (to the field check: 422)."""
    depth = api.cfg.api.max_json_depth
    data = b'{"subject": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    status, body = await post_raw(api, "/api/outbound", data)
    assert is_error(status, body, 422)
    assert body["message"] == "subject must be a string"
