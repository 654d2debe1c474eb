"""HTML mail made safe to show, with remote content blocked until the reader asks for it.

Policy:

- ammonia (nh3) keeps only harmless tags and attributes: no scripts, no
  event handlers, no forms, no ``<style>`` or ``<link>`` elements (so no
  remote style sheets and no ``@import``), links opened with
  ``rel="noopener noreferrer"``. Inline ``style`` attributes are kept, but
  only for the layout and typography properties in :data:`STYLE_PROPERTIES`
  (nothing that positions an element over the app).
- Remote content is what a mail client fetches on its own when the message
  is shown, telling the sender that (and from where, and when) it was read:
  images (the "tracking pixel") and ``url(...)`` in styles. By default
  (``block_remote``) each remote image loses its ``src``, kept instead as
  ``data-remote-src`` so that an app can offer "load remote images" and put
  them back itself; style declarations that would fetch anything (``url(``,
  ``image-set(``, CSS escapes that could spell either) are dropped. The
  number of blocked items is returned, for the app to say so.
- ``cid:`` images (RFC 2392: a part of the same message, by Content-ID) are
  rewritten to ``cid_url(content_id)``, a URL of our own that serves that part.
- Cost: nh3 is linear (html5ever); the rewriting of image tags is one
  regular-expression pass over nh3's own serialisation, which writes every
  attribute value double-quoted with ``"`` and ``>`` escaped, so an image
  tag is exactly ``<img`` up to the next ``>``. The API runs this in a
  worker thread (a 4 MiB body costs tens of milliseconds).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

import nh3

STYLE_PROPERTIES = frozenset(
    {
        "color",
        "background",
        "background-color",
        "font",
        "font-family",
        "font-size",
        "font-style",
        "font-weight",
        "text-align",
        "text-decoration",
        "text-indent",
        "text-transform",
        "line-height",
        "letter-spacing",
        "white-space",
        "vertical-align",
        "direction",
        "margin",
        "margin-top",
        "margin-right",
        "margin-bottom",
        "margin-left",
        "padding",
        "padding-top",
        "padding-right",
        "padding-bottom",
        "padding-left",
        "border",
        "border-top",
        "border-right",
        "border-bottom",
        "border-left",
        "border-color",
        "border-style",
        "border-width",
        "border-radius",
        "border-collapse",
        "border-spacing",
        "width",
        "min-width",
        "max-width",
        "height",
        "min-height",
        "max-height",
        "display",
    }
)

_ATTRIBUTES = {tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()}
_ATTRIBUTES["*"] = _ATTRIBUTES.get("*", set()) | {"style"}
_URL_SCHEMES = {"http", "https", "mailto", "cid"}
# A declaration that could fetch: url( or image-set( in any case, or any CSS escape (which could spell them).
_FETCHING = re.compile(r"(?i)url\s*\(|image-set\s*\(|\\")
_REMOTE = re.compile(r"(?i)^\s*(?:https?:)?//")
# In nh3's output an attribute value never holds a raw '>' or '"'.
_IMG = re.compile(r"<img\b[^>]*>")
_SRC = re.compile(r'\ssrc="([^"]*)"')


@dataclass(frozen=True)
class Display:
    html: str
    remote_blocked: int  # remote images and fetching style declarations taken out


def display_html(html: str, *, cid_url: Callable[[str], str], block_remote: bool = True) -> Display:
    """``html`` (a message's HTML body) made safe to show; see the module's policy."""
    blocked = 0

    def attribute(tag: str, name: str, value: str) -> str | None:
        nonlocal blocked
        if name == "style" and block_remote:
            declarations = value.split(";")
            kept = [d for d in declarations if not _FETCHING.search(d)]
            if len(kept) < len(declarations):
                blocked += 1
                return ";".join(kept)
            return value
        if tag == "img" and name == "src" and value[:4].lower() == "cid:":
            return cid_url(unquote(value[4:]).strip().removeprefix("<").removesuffix(">"))
        return value

    clean = nh3.clean(
        html,
        attributes=_ATTRIBUTES,
        attribute_filter=attribute,
        filter_style_properties=set(STYLE_PROPERTIES),
        url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer",
    )
    if not block_remote:
        return Display(clean, 0)

    def image(match: re.Match[str]) -> str:
        nonlocal blocked
        tag = match.group(0)
        src = _SRC.search(tag)
        if src is None or not _REMOTE.match(src.group(1)):
            return tag
        blocked += 1
        return tag[: src.start()] + f' data-remote-src="{src.group(1)}"' + tag[src.end() :]

    return Display(_IMG.sub(image, clean), blocked)


def sanitize_html(html: str) -> str:
    """HTML safe to quote in a reply or forward: no scripts, styles, event handlers or javascript: links."""
    return nh3.clean(html, link_rel="noopener noreferrer", url_schemes={"http", "https", "mailto", "cid"})
