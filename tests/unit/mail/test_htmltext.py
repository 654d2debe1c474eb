"""The visible text of HTML bodies, for search: what a reader sees, found in linear time."""

from __future__ import annotations

import time

import pytest

from relate.mail import limits
from relate.mail.htmltext import visible_text


@pytest.mark.parametrize(
    ("document", "text"),
    [
        ('<p>Logo: <img src="cid:img1@example.org"></p>', "Logo:"),
        (
            "<html><head><style>.x {color: red}</style><script>var secret = 1;</script></head>"
            "<body><h1>Caf&eacute; menu</h1><p>Fish &amp; chips<br>Soup</p></body></html>",
            "Café menu\nFish & chips\nSoup",
        ),
        ("<b>bold</b>text <i>and</i> more", "boldtext and more"),
        ("<!-- <script> -->visible", "visible"),
        ("<SCRIPT type=x>hidden</SCRIPT >shown", "shown"),
        ("a < b and c > d", "a < b and c > d"),
        ("<p>before</p><![foo[ x ]]><p>after</p>", "before\nafter"),
        ("<div>one</div><div>two</div>", "one\ntwo"),
        ("<!DOCTYPE html><?xml version='1.0'?>text", "text"),
        ("&#x263a; &#9731; &nbsp;x", "\u263a \u2603 \xa0x"),
        ("<style>never closed", ""),
        ("<!-- never closed", ""),
        ("text <a href='x", "text"),
    ],
)
def test_visible_text(document: str, text: str) -> None:
    """Tags, comments, scripts and styles are removed; block tags break lines; entities are decoded."""
    assert visible_text(document) == text


@pytest.mark.parametrize(
    "unit",
    ["<!--", "<a", "<script", "&a", "&amp;", "<", "<p>", "<![", "</script"],
    ids=["comments", "tags", "scripts", "entities", "references", "brackets", "breaks", "marked-sections", "closings"],
)
def test_hostile_html_is_read_in_well_under_a_second(unit: str) -> None:
    """MAX_HTML_SCAN characters of one unclosed construct (superlinear in html.parser) take well under a CPU second."""
    document = unit * (limits.MAX_HTML_SCAN // len(unit) + 1)
    start = time.thread_time()
    visible_text(document)
    assert time.thread_time() - start < 1.0


def test_only_the_first_part_of_a_long_document_is_read() -> None:
    """At most MAX_HTML_SCAN characters of a document are read."""
    document = "<p>word</p>" * (limits.MAX_HTML_SCAN // 11) + "<p>past the limit</p>" * 10
    assert "past the limit" not in visible_text(document)
    assert visible_text(document).startswith("word\nword")
