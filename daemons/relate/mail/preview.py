"""A message's preview (RFC 8970): a short plain-text summary of what it says, pure and bounded.

Policy: the preview comes from the message's first body text part, text/plain
if it has one, else text/html (its visible text): a leaf that is not an
attachment (no ``Content-Disposition: attachment``, no file name), outside any
encapsulated message. Only the first ``PLAIN_OCTETS`` (text) or
``HTML_OCTETS`` (HTML) octets of the part's encoded body are read, so the
cost of a preview does not grow with the message. Quoted lines (``>``) are
left out, and so is everything from the signature separator (``-- ``, RFC 3676
§4.3) on; runs of white space and control characters become one space; the
result is at most ``PREVIEW_CHARS`` characters (RFC 8970 §3.1: no more than 256).
A message without body text has the empty preview.

:func:`source` says which octets to read (from the body structure stored at
ingest, ``mail.mime``), :func:`make` turns them into the preview; the store
reads just those octets, and keeps the result (see the IMAP daemon's FETCH PREVIEW).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Any

from relate.mail import charset, htmltext, transfer

__all__ = ["HTML_OCTETS", "PLAIN_OCTETS", "PREVIEW_CHARS", "Source", "make", "source"]

PREVIEW_CHARS = 256
# Encoded octets of the chosen part read for a preview: enough for 256 characters of text behind
# quoted lines, transfer encoding (base64 takes 4 octets for 3) and, in HTML, markup and styles.
PLAIN_OCTETS = 16 * 1024
HTML_OCTETS = 64 * 1024
# Parts of a body structure looked at; mail.mime keeps a message below 1000.
_MAX_NODES = 1000

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]+")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Source:
    """The octets a preview is made from: ``raw[start:end]``, in transfer ``encoding`` and ``charset``."""

    start: int
    end: int
    encoding: str
    charset: str
    html: bool
    cut: bool  # end is before the part's end


def _attached(node: dict[str, Any]) -> bool:
    disposition = node.get("disposition") or None
    if disposition and str(disposition[0]).lower() == "attachment":
        return True
    named = [p for p in (disposition[1] if disposition else None) or [] if str(p[0]).lower() == "filename"]
    named += [p for p in node.get("params") or [] if str(p[0]).lower() == "name"]
    return bool(named)


def source(structure: dict[str, Any]) -> Source | None:
    """Which octets of the message to read for its preview, or None when it has no body text."""
    html: dict[str, Any] | None = None
    stack = [structure]
    seen = 0
    while stack and seen < _MAX_NODES:  # document order, without recursion
        node = stack.pop()
        seen += 1
        children = node.get("parts")
        if children:
            stack.extend(reversed(children))
            continue
        if str(node.get("type", "")).lower() != "text" or _attached(node):
            continue  # an attachment, an image, or an encapsulated message (not looked into)
        subtype = str(node.get("subtype", "")).lower()
        if subtype == "plain":
            return _source(node, html=False)
        if subtype == "html" and html is None:
            html = node
    return None if html is None else _source(html, html=True)


def _source(node: dict[str, Any], *, html: bool) -> Source:
    start, end = int(node["body_start"]), int(node["end"])
    stop = min(end, start + (HTML_OCTETS if html else PLAIN_OCTETS))
    label = next((str(v) for k, v in node.get("params") or [] if str(k).lower() == "charset"), "us-ascii")
    encoding = str(node.get("encoding") or "7bit").lower()
    return Source(start, max(start, stop), encoding, label, html, stop < end)


def make(data: bytes, src: Source) -> str:
    """The preview from ``data``, the octets :func:`source` named (``raw[src.start:src.end]``)."""
    decoded, _ = transfer.decode(data, 0, len(data), src.encoding)
    try:
        text = codecs.getincrementaldecoder(charset.codec(src.charset) or "utf-8")("replace").decode(
            decoded, final=not src.cut
        )
    except ValueError:  # UTF-16 without a byte order mark raises whatever the error handler
        text = decoded.decode("utf-8", "replace")
    if src.html:
        text = htmltext.visible_text(text)
    kept: list[str] = []
    size = 0
    for line in text.splitlines():
        if line.rstrip() == "--":  # "-- ", the signature separator (RFC 3676 §4.3), or a trimmed one
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line)
        size += len(line)
        if size > 4 * PREVIEW_CHARS:  # enough for the preview however much white space goes
            break
    flat = _SPACE.sub(" ", _CONTROL.sub(" ", " ".join(kept))).strip()
    return flat[:PREVIEW_CHARS].rstrip()
