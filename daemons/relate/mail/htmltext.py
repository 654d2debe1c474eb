"""The visible text of an HTML body, for full-text search, in time linear in its length.

Policy: the text is what a reader sees, roughly. Markup is removed by one
regular expression whose every alternative ends at the first ">" or at the
end of the input, so no construct is scanned twice (``html.parser`` re-scans
unclosed constructs on every ``feed`` and has superlinear cases on hostile
input). Comments and ``<script>``/``<style>`` elements vanish with their
content; block-level tags become line breaks; character references are
decoded (``html.unescape``); lines are stripped and empty ones dropped. At
most ``limits.MAX_HTML_SCAN`` characters of the document are read.
"""

from __future__ import annotations

import html
import re

from relate.mail.limits import MAX_HTML_SCAN

__all__ = ["visible_text"]

# Tags that separate words in the rendered text.
_BREAKS = "br|hr|p|div|blockquote|pre|li|tr|td|th|title|h[1-6]"
_MARKUP = re.compile(
    rf"""
    <(?:
      !--.*?(?:-->|\Z)
    | (?P<hidden>script|style)\b[^>]*+(?:>|\Z).*?(?:</(?P=hidden)\s*+>|\Z)
    | (?P<break>/?(?:{_BREAKS}))\b[^>]*+(?:>|\Z)
    | [a-zA-Z/!?][^>]*+(?:>|\Z)
    )""",
    re.VERBOSE | re.DOTALL | re.IGNORECASE,
)


def _replace(match: re.Match[str]) -> str:
    return "\n" if match.group("break") else ""


def visible_text(document: str) -> str:
    """The text of ``document`` (HTML), one non-empty stripped line per line."""
    text = html.unescape(_MARKUP.sub(_replace, document[:MAX_HTML_SCAN]))
    return "\n".join(stripped for line in text.splitlines() if (stripped := line.strip()))
