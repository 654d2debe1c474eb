"""OIDC sign-in: tokens from a real provider (npm's oidc-provider, tests/oidc/) on REST and the hub."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import aiohttp
import pytest

from relate.config import OidcConfig
from relate.services import accounts
from tests.api.conftest import Api, message
from tests.api.test_hub import Events, start_api

PROVIDER = Path(__file__).parents[1] / "oidc"
AUDIENCE = "https://mail.example.com/api"
REDIRECT = "http://127.0.0.1/callback"


def _need_provider() -> str:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None or not (PROVIDER / "node_modules" / "oidc-provider").is_dir():
        if os.environ.get("CI"):
            pytest.fail("node or tests/oidc/node_modules is missing; under CI they must be: run scripts/test-deps")
        pytest.skip("node and oidc-provider are not installed: run scripts/test-deps")
    return node


@contextlib.asynccontextmanager
async def provider(alg: str = "RS256", ttl: int = 600, port: int = 0) -> AsyncIterator[str]:
    """A running oidc-provider signing access tokens with ``alg``; yields its issuer URL."""
    env = os.environ | {"OIDC_ALG": alg, "OIDC_TTL": str(ttl), "OIDC_PORT": str(port)}
    env |= {"OIDC_AUDIENCE": AUDIENCE, "OIDC_REDIRECT": REDIRECT}
    proc = await asyncio.create_subprocess_exec(
        _need_provider(),
        str(PROVIDER / "provider.mjs"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        yield json.loads(line)["issuer"]
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:  # never hang the suite on the provider's shutdown
            proc.kill()
            await proc.wait()


class _Form(HTMLParser):
    """The first form of a page: its action and its inputs' names and values."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = found.get("action") or ""
        elif tag == "input" and found.get("name"):
            self.fields[found["name"] or ""] = found.get("value") or ""


async def sign_in(issuer: str, email: str, scope: str = "openid email relate.app") -> str:
    """Sign in as a browser would (code flow with PKCE, the login and consent forms); the access token."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(issuer + "/.well-known/openid-configuration") as resp:
            discovery = await resp.json()
        query = {"client_id": "relate-web", "response_type": "code", "redirect_uri": REDIRECT, "scope": scope}
        query |= {"state": secrets.token_urlsafe(8), "code_challenge": challenge, "code_challenge_method": "S256"}
        url, data = discovery["authorization_endpoint"] + "?" + urlencode(query), None
        for _ in range(12):
            method = "POST" if data is not None else "GET"
            async with browser.request(method, url, data=data, allow_redirects=False) as resp:
                if resp.status in (302, 303):
                    location = resp.headers["Location"]
                    if location.startswith(REDIRECT):
                        code = parse_qs(urlsplit(location).query)["code"][0]
                        break
                    url, data = urljoin(url, location), None
                    continue
                assert resp.status == 200, (resp.status, await resp.text())
                form = _Form()
                form.feed(await resp.text())
                assert form.action is not None, "a page without a form"
                fields = form.fields
                if "login" in fields:
                    fields |= {"login": email, "password": "any password"}
                url, data = urljoin(url, form.action), fields
        else:
            raise AssertionError("the sign-in never came back to the redirect URI")
        token_request = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
        token_request |= {"client_id": "relate-web", "code_verifier": verifier}
        async with browser.post(discovery["token_endpoint"], data=token_request) as resp:
            assert resp.status == 200, await resp.text()
            token: str = (await resp.json())["access_token"]
    assert token.count(".") == 2, "the provider issued an opaque token, not a JWT"
    return token


@contextlib.asynccontextmanager
async def oidc_api(api: Api, tmp_path: Path, issuer: str, **settings: Any) -> AsyncIterator[str]:
    """A second API daemon accepting ``issuer``'s tokens (``settings``: more api.oidc keys); yields its URL."""
    oidc = OidcConfig(issuer=issuer, audience=AUDIENCE, **settings)
    server = await start_api(api, tmp_path, api__oidc=oidc)
    try:
        yield f"http://127.0.0.1:{server.addresses()[0][1]}"
    finally:
        await server.stop()


async def status_of(api: Api, url: str, token: str, path: str = "/api/mailboxes") -> int:
    async with api.session.get(url + path, headers=api.auth(token)) as resp:
        return resp.status


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _part(token: str, n: int) -> dict[str, Any]:
    raw = token.split(".")[n]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    return decoded


async def test_code_flow_token_works_on_rest_and_hub(api: Api, tmp_path: Path) -> None:
    """A token from a browser-style code flow with PKCE reads alice's mail over REST and hears her hub."""
    async with provider() as issuer, oidc_api(api, tmp_path, issuer) as url:
        token = await sign_in(issuer, "alice@example.com")
        async with api.session.get(url + "/api/mailboxes", headers=api.auth(token)) as resp:
            assert resp.status == 200
            names = [box["name"] for box in (await resp.json())["items"]]
        assert "INBOX" in names
        async with api.session.ws_connect(url + "/hubs/email", params={"access_token": token}) as ws:
            await api.deliver(message("Signed in"), "alice@example.com")
            event = await Events(ws).next("NewEmail")
        assert event["data"]["subject"] == "Signed in"
        # API keys still work beside tokens.
        assert await status_of(api, url, api.alice) == 200


async def test_another_issuers_token_is_refused(api: Api, tmp_path: Path) -> None:
    """A token from a second provider (not the configured issuer) gets 401 on REST and on the hub."""
    async with provider() as issuer, provider() as other, oidc_api(api, tmp_path, issuer) as url:
        token = await sign_in(other, "alice@example.com")
        assert await status_of(api, url, token) == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with api.session.ws_connect(url + "/hubs/email", params={"access_token": token}):
                pass
        assert refused.value.status == 401


async def test_expired_token_is_refused(api: Api, tmp_path: Path) -> None:
    """A token is accepted until its exp, and refused once it has passed (no clock skew configured)."""
    async with provider(ttl=1) as issuer, oidc_api(api, tmp_path, issuer, clock_skew=0) as url:
        token = await sign_in(issuer, "alice@example.com")
        await asyncio.sleep(max(0.0, _part(token, 1)["exp"] + 1.1 - time.time()))
        assert await status_of(api, url, token) == 401


async def test_clock_skew_accepts_a_just_expired_token(api: Api, tmp_path: Path) -> None:
    """With api.oidc.clock_skew a token a second past its exp is still accepted."""
    async with provider(ttl=1) as issuer, oidc_api(api, tmp_path, issuer, clock_skew=30) as url:
        token = await sign_in(issuer, "alice@example.com")
        await asyncio.sleep(max(0.0, _part(token, 1)["exp"] + 1.1 - time.time()))
        assert await status_of(api, url, token) == 200


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
async def test_ec_and_eddsa_tokens_are_accepted_when_configured(api: Api, tmp_path: Path, alg: str) -> None:
    """ES256 and EdDSA tokens are accepted by default, and refused when api.oidc.algorithms leaves them out."""
    async with provider(alg=alg) as issuer:
        token = await sign_in(issuer, "alice@example.com")
        assert _part(token, 0)["alg"] == alg
        async with oidc_api(api, tmp_path, issuer) as url:
            assert await status_of(api, url, token) == 200
        async with oidc_api(api, tmp_path, issuer, algorithms=["RS256"]) as url:
            assert await status_of(api, url, token) == 401


async def test_none_and_hmac_forgeries_are_refused(api: Api, tmp_path: Path) -> None:
    """A real token's claims re-signed with alg none, or HS256 keyed with the provider's public key, get 401."""
    async with provider() as issuer, oidc_api(api, tmp_path, issuer) as url:
        token = await sign_in(issuer, "alice@example.com")
        header, payload = _part(token, 0), token.split(".")[1]
        unsigned = _b64(json.dumps(header | {"alg": "none"}).encode()) + "." + payload + "."
        assert await status_of(api, url, unsigned) == 401
        async with api.session.get(issuer + "/jwks") as resp:
            public = json.dumps((await resp.json())["keys"][0]).encode()
        signing_input = _b64(json.dumps(header | {"alg": "HS256"}).encode()) + "." + payload
        mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
        assert await status_of(api, url, signing_input + "." + _b64(mac)) == 401
        # A changed claim breaks the real signature.
        claims = _part(token, 1) | {"email": "bob@example.com"}
        tampered = token.split(".")
        tampered[1] = _b64(json.dumps(claims).encode())
        assert await status_of(api, url, ".".join(tampered)) == 401
        assert await status_of(api, url, token) == 200


async def test_rotated_key_is_fetched_on_an_unknown_kid(api: Api, tmp_path: Path) -> None:
    """The provider restarted with a new key (same issuer): its next token's unknown kid makes the API refetch."""
    async with provider() as issuer:
        port = urlsplit(issuer).port or 0
        first = await sign_in(issuer, "alice@example.com")
    async with oidc_api(api, tmp_path, issuer) as url:
        async with provider(port=port) as same:
            assert same == issuer
            # The API fetches the new JWKS here (its first look), so the old token's kid is unknown.
            assert await status_of(api, url, await sign_in(issuer, "alice@example.com")) == 200
            assert await status_of(api, url, first) == 401
        async with provider(port=port):
            second = await sign_in(issuer, "alice@example.com")
            assert _part(second, 0)["kid"] != _part(first, 0)["kid"]
            await asyncio.sleep(5.1)  # refetches on an unknown kid are at most one per 5 seconds
            assert await status_of(api, url, second) == 200


async def test_users_are_matched_by_email_and_provisioned_when_configured(api: Api, tmp_path: Path) -> None:
    """An address without a user is refused, unless api.oidc.provision is on: then the user is created."""
    async with provider() as issuer:
        token = await sign_in(issuer, "carol@example.com")
        stranger = await sign_in(issuer, "dave@elsewhere.example")
        async with oidc_api(api, tmp_path, issuer) as url:
            assert await status_of(api, url, token) == 401
        async with oidc_api(api, tmp_path, issuer, provision=True) as url:
            assert await status_of(api, url, token) == 200
            assert await status_of(api, url, stranger) == 401  # not a hosted domain
        assert (await accounts.get_user(api.pool, "carol@example.com"))["address"] == "carol@example.com"


async def test_scopes_are_mapped(api: Api, tmp_path: Path) -> None:
    """A token with only a read scope may read but not write; one with no mapped scope gets 403."""
    async with provider() as issuer:
        reader = await sign_in(issuer, "alice@example.com", scope="openid email relate.read")
        bare = await sign_in(issuer, "alice@example.com", scope="openid email")
        async with oidc_api(api, tmp_path, issuer) as url:
            assert await status_of(api, url, reader) == 200
            async with api.session.delete(url + "/api/emails/1", headers=api.auth(reader)) as resp:
                assert resp.status == 403
            assert await status_of(api, url, bare) == 403
