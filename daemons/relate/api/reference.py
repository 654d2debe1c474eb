"""The API reference for people: one HTML page generated from the OpenAPI document, at ``GET /api/docs``.

Policy: the page is made here, from :func:`relate.api.openapi.document`, so
it can never disagree with ``/api/openapi.json``; it is public like that
document. It is self-contained: its own small style sheet inline, no
scripts, no fonts, no images, nothing from any other origin (a CSP that
forbids all of it is sent with it, so an administrator's proxy or a browser
extension cannot add any either). Every text from the document is HTML-escaped.
Schemas are drawn as nested field tables two levels deep; deeper ones, and
every named schema, link to the schema's own section at the end.
"""

from __future__ import annotations

import asyncio
import functools
from html import escape
from typing import Any

from aiohttp import web

from relate.api import openapi

routes = web.RouteTableDef()

_METHODS = ("get", "post", "put", "patch", "delete")
_MAX_DEPTH = 2

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 72rem; padding: 1rem 2rem; color: #1b1b1b; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.5rem; }
code, .path { font-family: ui-monospace, monospace; font-size: .92em; }
.op { border: 1px solid #ddd; border-radius: 6px; margin: 1rem 0; padding: .6rem 1rem; }
.method { display: inline-block; min-width: 4.2rem; font-weight: 700; font-family: ui-monospace, monospace; }
.get { color: #0a6b2b; } .post { color: #0b4f9c; } .put, .patch { color: #8a5a00; } .delete { color: #a3141b; }
.scope { float: right; font-size: .85em; background: #eef; border-radius: 4px; padding: 0 .4rem; }
table { border-collapse: collapse; margin: .4rem 0; } td, th { border: 1px solid #ddd; padding: .2rem .5rem;
 vertical-align: top; text-align: left; } th { background: #f6f6f6; }
.muted { color: #666; } nav ul { columns: 2; } a { color: #0b4f9c; }
"""


def _schema_name(ref: str) -> str:
    return ref.rsplit("/", 1)[1]


def _type(schema: dict[str, Any]) -> str:
    """A one-line type for a schema: ``string (date-time)``, ``array of Mailbox``, ``integer or null``."""
    if "$ref" in schema:
        name = escape(_schema_name(schema["$ref"]))
        return f'<a href="#schema-{name}">{name}</a>'
    if "const" in schema:
        return f"<code>{escape(repr(schema['const']))}</code>"
    for key in ("oneOf", "anyOf"):
        if key in schema and "type" not in schema:
            return " or ".join(_type(s) for s in schema[key])
    if "allOf" in schema:
        return " and ".join(_type(s) for s in schema["allOf"])
    kind = schema.get("type", "any")
    kinds = kind if isinstance(kind, list) else [kind]
    shown = []
    for k in kinds:
        if k == "array" and isinstance(schema.get("items"), dict):
            shown.append(f"array of {_type(schema['items'])}")
        else:
            shown.append(escape(str(k)))
    text = " or ".join(shown)
    if "format" in schema:
        text += f" ({escape(str(schema['format']))})"
    if "enum" in schema:
        text += ": " + ", ".join(f"<code>{escape(str(v))}</code>" for v in schema["enum"])
    bounds = [f"{k} {schema[k]}" for k in ("minimum", "maximum", "maxLength", "maxItems") if k in schema]
    if bounds:
        text += f" <span class=muted>({escape(', '.join(bounds))})</span>"
    return text


def _fields(schema: dict[str, Any], depth: int) -> str:
    """A table of an object's fields (through allOf), nested objects inline up to _MAX_DEPTH."""
    props: dict[str, Any] = {}
    required: set[str] = set()
    parts = schema.get("allOf", [schema])
    for part in parts:
        if "$ref" in part and depth > 0:
            continue  # shown by name in the type line
        props |= part.get("properties", {})
        required |= set(part.get("required", []))
    if not props:
        return ""
    rows = []
    for name, sub in props.items():
        nested = ""
        if depth < _MAX_DEPTH and isinstance(sub, dict) and sub.get("type") == "object" and "properties" in sub:
            nested = _fields(sub, depth + 1)
        rows.append(
            f"<tr><td><code>{escape(name)}</code>{' <b>*</b>' if name in required else ''}</td>"
            f"<td>{_type(sub) if isinstance(sub, dict) else ''}</td>"
            f"<td>{escape(str(sub.get('description', ''))) if isinstance(sub, dict) else ''}{nested}</td></tr>"
        )
    return "<table><tr><th>field</th><th>type</th><th>about</th></tr>" + "".join(rows) + "</table>"


def _schema_block(schema: dict[str, Any]) -> str:
    desc = f"<p>{escape(str(schema['description']))}</p>" if "description" in schema else ""
    return f"<p>{_type(schema)}</p>{desc}{_fields(schema, 0)}"


def _parameters(params: list[dict[str, Any]], doc: dict[str, Any]) -> str:
    if not params:
        return ""
    rows = []
    for p in params:
        if "$ref" in p:
            p = doc["components"]["parameters"][_schema_name(p["$ref"])]
        rows.append(
            f"<tr><td><code>{escape(p['name'])}</code>{' <b>*</b>' if p.get('required') else ''}</td>"
            f"<td>{escape(p['in'])}</td><td>{_type(p.get('schema', {}))}</td>"
            f"<td>{escape(str(p.get('description', '')))}</td></tr>"
        )
    return (
        "<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th><th>about</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _responses(responses: dict[str, Any], doc: dict[str, Any]) -> str:
    rows = []
    for status, response in sorted(responses.items()):
        if "$ref" in response:
            response = doc["components"]["responses"][_schema_name(response["$ref"])]
        body = ""
        for media, content in response.get("content", {}).items():
            body += f"<code>{escape(media)}</code>: {_type(content.get('schema', {}))} "
        rows.append(
            f"<tr><td><b>{escape(status)}</b></td><td>{escape(str(response.get('description', '')))}</td>"
            f"<td>{body}</td></tr>"
        )
    return "<h4>Answers</h4><table><tr><th>status</th><th>when</th><th>body</th></tr>" + "".join(rows) + "</table>"


def _operation(path: str, method: str, op: dict[str, Any], doc: dict[str, Any]) -> str:
    anchor = escape(f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", ""))
    scopes = [s for req in op.get("security", []) for s in req.get("bearer", [])]
    scope = f"<span class=scope>{escape(', '.join(scopes))}</span>" if scopes else "<span class=scope>public</span>"
    out = [
        f'<div class=op id="{anchor}">{scope}<span class="method {method}">{method.upper()}</span> '
        f"<span class=path>{escape(path)}</span><p>{escape(op.get('summary', ''))}</p>"
    ]
    if "description" in op:
        out.append(f"<p>{escape(op['description'])}</p>")
    if "x-rate-limit" in op:
        out.append(f"<p class=muted>Rate limit: {escape(str(op['x-rate-limit']))}</p>")
    out.append(_parameters(op.get("parameters", []), doc))
    body = op.get("requestBody", {}).get("content", {})
    for media, content in body.items():
        out.append(f"<h4>Body (<code>{escape(media)}</code>)</h4>{_schema_block(content.get('schema', {}))}")
    out.append(_responses(op.get("responses", {}), doc))
    out.append("</div>")
    return "".join(out)


def render(doc: dict[str, Any]) -> str:
    """The whole reference page for ``doc`` (an OpenAPI 3.1 document)."""
    info = doc["info"]
    by_tag: dict[str, list[str]] = {t["name"]: [] for t in doc.get("tags", [])}
    for path, item in doc["paths"].items():
        for method in _METHODS:
            if method in item:
                tag = (item[method].get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).append(_operation(path, method, item[method], doc))
    nav = "".join(f'<li><a href="#tag-{escape(t)}">{escape(t)}</a></li>' for t, ops in by_tag.items() if ops)
    nav += '<li><a href="#schemas">schemas</a></li>'
    sections = [f'<h2 id="tag-{escape(tag)}">{escape(tag)}</h2>' + "".join(ops) for tag, ops in by_tag.items() if ops]
    schemas = "".join(
        f'<h3 id="schema-{escape(name)}">{escape(name)}</h3>{_schema_block(schema)}'
        for name, schema in sorted(doc["components"]["schemas"].items())
    )
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{escape(info['title'])} {escape(info['version'])}: reference</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(info['title'])} <span class=muted>{escape(info['version'])}</span></h1>"
        f"<p>{escape(info.get('description', ''))}</p>"
        '<p>The same in machine-readable form: <a href="/api/openapi.json">/api/openapi.json</a> (OpenAPI 3.1). '
        "Fields marked <b>*</b> are required.</p>"
        f"<nav><ul>{nav}</ul></nav>{''.join(sections)}<h2 id=schemas>Schemas</h2>{schemas}</body></html>"
    )


@functools.cache
def _page() -> bytes:
    return render(openapi.document()).encode()


_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "max-age=300",
}


def setup(app: web.Application) -> None:
    """Render the page at start-up, in a worker thread (it costs over 100 ms of CPU), not on a request's time."""

    async def render_now(_: web.Application) -> None:
        await asyncio.to_thread(_page)

    app.on_startup.append(render_now)


@routes.get("/api/docs")
async def reference(request: web.Request) -> web.Response:
    return web.Response(body=_page(), content_type="text/html", charset="utf-8", headers=_HEADERS)
