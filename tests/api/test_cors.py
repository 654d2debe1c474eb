"""CORS: api.cors_origins lets listed origins' pages call the API; preflights; never credentials with a wildcard."""

from __future__ import annotations

from pathlib import Path

import pytest

from relate.config import Config, ConfigError
from tests.api.conftest import Api
from tests.api.test_hub import another_api

APP = "https://mail.example.net"
PREFLIGHT = {
    "Origin": APP,
    "Access-Control-Request-Method": "PATCH",
    "Access-Control-Request-Headers": "authorization, content-type, x-evil",
}


async def test_no_origins_configured_means_no_cors_headers(api: Api) -> None:
    """By default a cross-origin request gets no Access-Control header and a preflight gets the API's 405."""
    async with api.session.get(api.url + "/api/mailboxes", headers=api.auth(api.alice) | {"Origin": APP}) as resp:
        assert resp.status == 200
        assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
    async with api.session.options(api.url + "/api/emails/1", headers=PREFLIGHT) as resp:
        assert resp.status == 405
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_a_listed_origin_gets_preflight_and_answers_with_credentials(api: Api, tmp_path: Path) -> None:
    """A listed origin: the preflight is answered 204 without a key (methods, the known headers asked for, a
    cache time); answers, errors included, name that origin with credentials; another origin gets nothing."""
    async with another_api(api, tmp_path, api__cors_origins=[APP, "http://localhost:5173"]) as (_server, url):
        async with api.session.options(url + "/api/emails/1", headers=PREFLIGHT) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == APP
            assert resp.headers["Access-Control-Allow-Credentials"] == "true"
            assert "PATCH" in resp.headers["Access-Control-Allow-Methods"]
            assert resp.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
            assert int(resp.headers["Access-Control-Max-Age"]) > 0
            assert "Origin" in resp.headers["Vary"]
        async with api.session.get(url + "/api/mailboxes", headers=api.auth(api.alice) | {"Origin": APP}) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == APP
            assert resp.headers["Access-Control-Allow-Credentials"] == "true"
            assert "Retry-After" in resp.headers["Access-Control-Expose-Headers"]
        async with api.session.get(url + "/api/mailboxes", headers={"Origin": APP}) as resp:
            assert resp.status == 401  # the app can read why
            assert resp.headers["Access-Control-Allow-Origin"] == APP
        other = PREFLIGHT | {"Origin": "https://evil.example"}
        async with api.session.options(url + "/api/emails/1", headers=other) as resp:
            assert resp.status == 405
            assert "Access-Control-Allow-Origin" not in resp.headers
        headers = api.auth(api.alice) | {"Origin": "https://evil.example"}
        async with api.session.get(url + "/api/mailboxes", headers=headers) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers


async def test_the_wildcard_never_comes_with_credentials(api: Api, tmp_path: Path) -> None:
    """With "*", any origin is answered with * and no Access-Control-Allow-Credentials, preflight included."""
    async with another_api(api, tmp_path, api__cors_origins=["*"]) as (_server, url):
        async with api.session.options(url + "/api/emails/1", headers=PREFLIGHT) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            assert "Access-Control-Allow-Credentials" not in resp.headers
        headers = api.auth(api.alice) | {"Origin": "https://anywhere.example"}
        async with api.session.get(url + "/api/mailboxes", headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            assert "Access-Control-Allow-Credentials" not in resp.headers


@pytest.mark.parametrize("origin", ["mail.example.net", "https://mail.example.net/app", "ftp://x.example", ""])
def test_a_bad_origin_stops_start_up_naming_the_key(origin: str) -> None:
    """Anything in api.cors_origins that is not an origin (or "*") is a configuration error naming the key."""
    cfg = Config(hostname="mail.example.com")
    cfg.api.cors_origins = [APP, origin]
    with pytest.raises(ConfigError, match=r"api\.cors_origins\[1\]"):
        cfg.validate()
