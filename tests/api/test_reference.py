"""GET /api/docs: the reference page generated from openapi.json, complete and self-contained."""

from __future__ import annotations

import re
from html import escape
from html.parser import HTMLParser

from tests.api.conftest import Api
from tests.api.test_openapi import _document


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.tags: set[str] = set()
        self.fetching: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name == "href" and value is not None:
                self.hrefs.append(value)
            if name in ("src", "srcset", "action", "poster", "data"):
                self.fetching.append((tag, name))


async def test_reference_lists_every_operation_and_schema(api: Api) -> None:
    """Every path, method and schema of openapi.json is on the page; every in-page link has its target."""
    doc = await _document(api)
    async with api.session.get(api.url + "/api/docs") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
    for path, item in doc["paths"].items():
        assert f"<span class=path>{escape(path)}</span>" in page, path
        for method in ("get", "post", "put", "patch", "delete"):
            if method in item:
                assert re.search(
                    rf'class="method {method}">{method.upper()}</span> <span class=path>{re.escape(escape(path))}<',
                    page,
                )
    links = _Links()
    links.feed(page)
    for name in doc["components"]["schemas"]:
        assert f"schema-{name}" in links.ids
    for href in links.hrefs:
        assert href == "/api/openapi.json" or href[1:] in links.ids, href


async def test_reference_loads_nothing_from_anywhere(api: Api) -> None:
    """The page has no scripts, images or external links, and its CSP forbids any."""
    async with api.session.get(api.url + "/api/docs") as resp:
        csp = resp.headers["Content-Security-Policy"]
        page = await resp.text()
    assert "default-src 'none'" in csp
    assert "script-src" not in csp
    links = _Links()
    links.feed(page)
    assert links.fetching == []
    assert {"script", "img", "link", "iframe"} & links.tags == set()
    assert all(h.startswith(("#", "/api/")) for h in links.hrefs)
