"""Every route of the OpenAPI document, fuzzed over a real socket: no 500 ever, every error in the documented shape.

Unlike the other modules here this one talks to a running API daemon (the
one tests/api/conftest.py starts, on loopback) with aiohttp, because what
can 500 is the whole request path: parameters, JSON bodies, handlers, the
store. Requests are drawn from the document itself (each operation's path,
query parameters and body schema, mixed with arbitrary JSON, raw bytes and
text that once broke something), so a route added to the document is
fuzzed too. The CI profile's examples take a few seconds;
``API_FUZZ_EXAMPLES`` asks for more (``scripts/fuzz``-style long runs).
Web push stays unconfigured: fuzzed subscriptions must never make the test
post to hosts on the Internet.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from yarl import URL

from relate.api import openapi
from relate.config import Config
from tests.api.conftest import (  # noqa: F401 - api is the fixture the tests below take
    Api,
    Operation,
    api,
    make_api_config,
    message,
    operations,
)

DOC = openapi.document()
OPERATIONS = operations(DOC)
ROUTES = OPERATIONS

FUZZ = settings(
    max_examples=int(os.environ.get("API_FUZZ_EXAMPLES", settings.default.max_examples)),
    deadline=None,  # a request crosses a socket and the database; slowness is the watchdog's business
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Ids of real things, filled in at run time: "@email" in a path or a body becomes an id of alice's mail.
REFS = ("@email", "@draft", "@key", "@mailbox", "@attachment")
SPECIAL = [
    *REFS,
    "",
    "0",
    "-1",
    "1",
    "9" * 25,
    "²",
    "١٢",
    "\x00",
    "a\x00b",
    "\ud800",
    "\u2028",
    "\x85",
    "INBOX",
    "Trash",
    "true",
    "no",
    "2026-11-21",
    "2026-11-21T10:00:00",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "NaN",
    "1e999",
    "%_\\'\"",
    "bob@example.com",
    "alice@example.com",
    "Bob <bob@example.com>",
    "x@remote.example",
    "<id@host>",
    "aGk=",
    "\\Seen",
    "relate_000000000000_" + "x" * 32,
]
TEXT = st.sampled_from(SPECIAL) | st.text(max_size=40)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12
)
HOSTILE = [
    b"[" * 100_000,
    b'{"a":' + b"[" * 40 + b"]" * 40 + b"}",
    b"[" + b"0," * 20_000 + b"0]",
    b'{"subject": "\\ud800"}',
    b'{"subject": NaN}',
    b"\xff\xfe{}",
    b"",
]


def _schema(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = DOC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def from_schema(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values shaped like ``schema`` (its properties, items, types), always mixed with arbitrary JSON."""
    schema = _schema(schema)
    if depth > 3:
        return JSON
    options: list[st.SearchStrategy[Any]] = [JSON]
    properties: dict[str, Any] = dict(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        properties |= _schema(part).get("properties", {})
    if properties:
        options.append(
            st.fixed_dictionaries({}, optional={k: from_schema(v, depth + 1) for k, v in properties.items()})
        )
    kinds = schema.get("type", [])
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "array" in kinds:
        options.append(st.lists(from_schema(schema.get("items", {}), depth + 1), max_size=4))
    if "string" in kinds:
        options.append(TEXT)
    if "integer" in kinds:
        options.append(st.sampled_from(REFS) | st.integers(min_value=-(2**64), max_value=2**64))
    if "boolean" in kinds:
        options.append(st.booleans())
    options += [from_schema(s, depth + 1) for key in ("oneOf", "anyOf") for s in schema.get(key, [])]
    # The shaped options (everything after JSON) come first: they reach further into the handlers.
    return st.one_of(options[1:] + options[:1]) if len(options) > 1 else JSON


OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
DATES = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59))
ISO_DATES = st.one_of(
    st.dates().map(date.isoformat),
    DATES.map(datetime.isoformat),
    st.tuples(DATES, OFFSETS).map(lambda d: d[0].replace(tzinfo=d[1]).isoformat()),
)


def param_values(param: dict[str, Any]) -> st.SearchStrategy[str]:
    """Values for a documented query parameter: of its type (dates, integers, booleans) or any text."""
    schema = param.get("schema", {})
    options = [TEXT]
    if schema.get("format") == "date-time":
        options.append(ISO_DATES)
    if schema.get("type") == "integer":
        options.append(st.integers(min_value=-(2**70), max_value=2**70).map(str))
    if schema.get("type") == "boolean":
        options.append(st.sampled_from(["true", "false", "1", "0", "yes", "No", "TRUE"]))
    return st.one_of(options[1:] + options[:1])


def bodies(schema: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    """A request body: mostly shaped like the documented one, sometimes hostile bytes or arbitrary bytes."""
    return st.one_of(from_schema(schema or {}), st.sampled_from(HOSTILE), st.binary(max_size=200))


@dataclass(frozen=True)
class Request:
    """One drawn request: placeholders ("@email") are replaced by real ids when it is sent."""

    op: Operation
    path: dict[str, str] = field(default_factory=dict)
    query: tuple[tuple[str, str], ...] = ()
    body: Any = None  # JSON to encode, or bytes sent as they are
    content_type: str = "application/json"
    key: str = "alice"  # which of the fixture's keys, or "none" / "junk"
    forwarded_for: str | None = None


@st.composite
def requests(draw: st.DrawFn, ops: list[Operation]) -> Request:
    op = draw(st.sampled_from(ops))
    names = re.findall(r"\{(\w+)\}", op.path)
    path = {n: draw(st.sampled_from(REFS) | TEXT | st.integers(-2, 2**64).map(str)) for n in names}
    documented = [p for p in op.parameters if p["in"] == "query"]
    chosen = (
        draw(st.lists(st.sampled_from(documented), max_size=4, unique_by=lambda p: p["name"])) if documented else []
    )
    query = tuple((p["name"], draw(param_values(p))) for p in chosen) + tuple(
        draw(st.lists(st.tuples(TEXT, TEXT), max_size=2))
    )
    body: Any = None
    if op.body is not None or draw(st.booleans()):
        body = draw(bodies(op.body))
    content_type = draw(st.sampled_from(["application/json"] * 8 + ["text/plain", "application/json; charset=x"]))
    key = draw(st.sampled_from(["alice"] * 8 + ["alice_read", "none", "junk"]))
    forwarded_for = draw(st.none() | TEXT)
    return Request(op, path, query, body, content_type, key, forwarded_for)


@dataclass
class Targets:
    """The running API, real ids to aim at, and the keys to use."""

    api: Api = field(repr=False)
    ids: dict[str, int]
    keys: dict[str, str]
    own_key: int  # the id of the key the fuzzer sends: revoking or rotating it would end the run

    def path_value(self, path: str, value: str) -> str:
        """``value`` for a path placeholder; never the fuzzer's own key id on a key-management route."""
        text = str(self.fill(value))
        own = path.startswith("/api/smtp-credentials/") and text.isascii() and text.isdigit()
        return str(self.ids["@key"]) if own and int(text) == self.own_key else text

    def fill(self, value: Any) -> Any:
        """``value`` with every "@ref" string (anywhere in JSON) replaced by its id."""
        if isinstance(value, str) and value in self.ids:
            return self.ids[value]
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        return value


@pytest.fixture
def api_config(dsn: str, tmp_path: Path) -> Config:
    """The test API with limits out of the fuzzer's way: it must reach the handlers, not 429 or a lockout."""
    cfg = make_api_config(dsn, tmp_path)
    cfg.api.requests_per_minute = cfg.api.writes_per_minute = cfg.api.key_calls_per_minute = 10**9
    cfg.auth.max_failures, cfg.auth.max_failures_per_address = 1000, 10_000
    cfg.api.max_attachment_size = 64 * 1024
    return cfg


@pytest.fixture
async def targets(api: Api) -> Targets:  # noqa: F811 - the fixture imported above
    """Mail with an attachment in alice's INBOX, a draft, and a key of hers the fuzzer may revoke."""
    raw = (
        b"From: Eve <eve@remote.example>\r\nTo: alice@example.com\r\nSubject: fuzz\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b'--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="a.bin"\r\n\r\n'
        b"xyz\r\n--b--\r\n"
    )
    (email_id,) = await api.deliver(raw, "alice@example.com")
    await api.deliver(message(), "alice@example.com")
    status, draft = await api.call("POST", "/api/outbound", json={"to": ["bob@example.com"], "subject": "d"})
    assert status == 201
    _, keys = await api.call("GET", "/api/smtp-credentials")
    _, profile = await api.call("GET", "/api/profile")
    spare = next(k["id"] for k in keys["items"] if k["id"] != profile["key"]["id"])  # never the fuzzer's own key
    _, mailboxes = await api.call("GET", "/api/mailboxes")
    return Targets(
        api=api,
        ids={"@email": email_id, "@draft": draft["id"], "@key": spare, "@mailbox": mailboxes["items"][0]["id"]}
        | {"@attachment": 0},
        own_key=profile["key"]["id"],
        keys={"alice": api.alice, "alice_read": api.alice_read, "junk": "relate_0_" + "x" * 3},
    )


def _encode(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def _check(op: Operation, status: int, content_type: str, raw: bytes) -> None:
    """No 500; an error is JSON {"error", "message"} with a status the document lists for the operation."""
    body = json.loads(raw) if content_type == "application/json" else None
    where = f"{op.method} {op.path} -> {status} {raw[:300]!r}"
    # 503 only for push, which stays unconfigured here (the database is up).
    assert status < 500 or (status == 503 and isinstance(body, dict) and body.get("error") == "push_not_configured"), (
        where
    )
    if status >= 400:
        assert isinstance(body, dict), where
        assert set(body) == {"error", "message"}, where
        assert all(isinstance(v, str) and v for v in body.values()), where
        documented = DOC["paths"][op.path][op.method.lower()]["responses"]
        # 405 and 404 can also come from the router, before any route is chosen.
        assert str(status) in documented or status in (404, 405), where


async def send(targets: Targets, req: Request) -> None:
    daemon = targets.api
    path = req.op.path
    for name, value in req.path.items():
        path = path.replace("{" + name + "}", _encode(targets.path_value(req.op.path, value)))
    query = "&".join(f"{_encode(k)}={_encode(str(targets.fill(v)))}" for k, v in req.query)
    url = URL(daemon.url + path + (f"?{query}" if query else ""), encoded=True)
    headers = {"Content-Type": req.content_type}
    if req.key in targets.keys:
        headers["Authorization"] = f"Bearer {targets.keys[req.key]}"
    if req.forwarded_for is not None:
        headers["X-Forwarded-For"] = _encode(req.forwarded_for)
    data = None
    if req.body is not None:
        data = req.body if isinstance(req.body, bytes) else json.dumps(targets.fill(req.body)).encode()
    async with daemon.session.request(req.op.method, url, data=data, headers=headers) as resp:
        _check(req.op, resp.status, resp.content_type, await resp.read())


def _op(method: str, path: str) -> Operation:
    return next(op for op in OPERATIONS if (op.method, op.path) == (method, path))


@FUZZ
@given(req=requests(ROUTES))
@example(req=Request(_op("GET", "/api/emails"), query=(("mailbox", "\x00x"),)))
@example(req=Request(_op("GET", "/api/emails/search"), query=(("q", "\x00"),)))
@example(req=Request(_op("GET", "/api/emails/search"), query=(("after", "0001-01-01T00:00:00+14:00"),)))
@example(req=Request(_op("POST", "/api/outbound"), body={"subject": "a\u2028b", "to": ["b\x85 <bob@example.com>"]}))
@example(req=Request(_op("POST", "/api/outbound/send"), body=b"[" * 100_000))
@example(req=Request(_op("PATCH", "/api/emails/{id}"), path={"id": "@email"}, body={"mailbox": 10**30}))
async def test_no_route_answers_500(targets: Targets, req: Request) -> None:
    """Any path parameters, query, JSON or bytes on any documented route: never a 500, errors as documented."""
    await send(targets, req)
