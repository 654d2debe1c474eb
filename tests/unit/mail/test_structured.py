"""Address lists (RFC 5322 §3.4) and MIME parameters (RFC 2045/2231), parsed without recursion or the email package."""

from __future__ import annotations

import time

import pytest

from relate.mail import limits
from relate.mail.structured import parse_address_list, parse_parameters


def flat(value: str) -> list[tuple[str, str]]:
    return [member for _, members in parse_address_list(value).groups for member in members]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # RFC 5322 Appendix A.1.2 and A.1.3
        ('"Joe Q. Public" <john.q.public@example.com>', [("Joe Q. Public", "john.q.public@example.com")]),
        (
            "Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>",
            [("Mary Smith", "mary@x.test"), ("", "jdoe@example.org"), ("Who?", "one@y.test")],
        ),
        (
            '<boss@nil.test>, "Giant; \\"Big\\" Box" <sysservices@example.net>',
            [("", "boss@nil.test"), ('Giant; "Big" Box', "sysservices@example.net")],
        ),
        # RFC 5322 Appendix A.5: comments and white space everywhere
        (
            "Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>",
            [("Pete(A nice ) chap)", "pete@silly.test")],
        ),
        # obsolete forms (RFC 5322 §4.4) and what mailers really send
        ("a . b @ c . d", [("", "a.b@c.d")]),
        ("<@relay.example,@other.example:bob@example.com>", [("", "bob@example.com")]),
        ("bob@example.com (Bob Smith)", [("Bob Smith", "bob@example.com")]),
        ("Alice alice@example.org", [("Alice", "alice@example.org")]),
        (
            "J.Smith <j@example.org>, Dr. J. Smith <d@example.org>",
            [("J.Smith", "j@example.org"), ("Dr. J. Smith", "d@example.org")],
        ),
        ('"bob smith"@example.com', [("", '"bob smith"@example.com')]),
        ("bob@[192.0.2.1]", [("", "bob@[192.0.2.1]")]),
        ("a@example.org; b@example.org", [("", "a@example.org"), ("", "b@example.org")]),
        ("=?utf-8?q?M=C3=BCller,_Hans?= <h@example.org>", [("=?utf-8?q?M=C3=BCller,_Hans?=", "h@example.org")]),
        ("Jörg <jörg@bücher.example>", [("Jörg", "jörg@bücher.example")]),
        ("<>, , (only a comment)", []),
    ],
)
def test_address_lists(value: str, expected: list[tuple[str, str]]) -> None:
    """Display names and addr-specs come out as mail clients show them, standard and obsolete forms alike."""
    assert flat(value) == expected


def test_groups() -> None:
    """Groups keep their names and members; an unterminated group ends with the field (RFC 5322 §3.4)."""
    value = (
        "A Group(Some people):Chris Jones <c@(Chris's host.)public.example>, joe@example.org;"
        " x@y.example, Team: t@y.example"
    )
    result = parse_address_list(value)
    assert result.groups == [
        ("A Group(Some people)", [("Chris Jones", "c@public.example"), ("", "joe@example.org")]),
        (None, [("", "x@y.example")]),
        ("Team", [("", "t@y.example")]),
    ]
    assert result.comments == ["Some people", "Chris's host."]
    assert parse_address_list("undisclosed-recipients:;").groups == [("undisclosed-recipients", [])]


def test_source_routes_are_kept_apart() -> None:
    """A source route is left out of the addr-spec and kept, by addr-spec, in routes."""
    result = parse_address_list("<@route:user@domain>, Bob <@a.example, @b.example:bob@x.example>, c@d.example")
    assert result.groups == [(None, [("", "user@domain"), ("Bob", "bob@x.example"), ("", "c@d.example")])]
    assert result.routes == {"user@domain": "@route", "bob@x.example": "@a.example,@b.example"}
    assert parse_address_list("Alice <alice@example.org>").routes == {}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("Alice <alice@example.org", "unbalanced"),
        ('"Alice <alice@example.org>', "unbalanced"),
        ("Alice (comment <alice@example.org>", "unbalanced"),
        ("Alice) <alice@example.org>", "unbalanced"),
        ("Alice <<alice@example.org>>", "unbalanced"),
        ("a <b" + "(" * 500, "nesting"),
        ("(" * (limits.MAX_NESTING + 1) + ")" * (limits.MAX_NESTING + 1) + " a@b.example", "nesting"),
        ("<@evil.example:a@b.example>", "route"),
        ("Alice <a@b.example> bob@c.example", "junk"),
        ("a@b@c.example", "junk"),
        (", ".join(["a@b.example"] * (limits.MAX_ADDRESSES + 1)), "too-many"),
    ],
)
def test_problems_are_reported(value: str, problem: str) -> None:
    """What a reader could take two ways is reported, and a best reading is still given."""
    assert problem in parse_address_list(value).problems


@pytest.mark.parametrize(
    "value",
    [
        "a " * 20_000 + "@ " + ":" * 20_000,  # colons after a long item that is no group name
        "a, " * 20_000,
        "<" * 40_000 + ">" * 40_000,
        "(" * 40_000,
        '"' * 60_001,
        "a@" * 30_000,
        "=?utf-8?q?a,b?= " * 4_000,
        "G: " * 20_000,
    ],
    ids=["colons", "commas", "angles", "comments", "quotes", "ats", "encoded-words", "groups"],
)
def test_hostile_lists_take_linear_time(value: str) -> None:
    """60 KiB hostile address lists parse in well under a CPU second (no rescans as items grow)."""
    start = time.thread_time()
    parse_address_list(value)
    assert time.thread_time() - start < 1.0


def test_nesting_at_the_limit_is_clean() -> None:
    """Comments nested exactly MAX_NESTING deep are no problem."""
    depth = limits.MAX_NESTING
    assert parse_address_list("(" * depth + ")" * depth + " a@b.example").problems == set()


@pytest.mark.parametrize(
    ("value", "head", "params"),
    [
        ("text/plain", "text/plain", {}),
        ('Text/HTML; Charset="UTF-8"', "text/html", {"charset": "UTF-8"}),
        ("text / plain ; (comment) format=flowed (more)", "text/plain", {"format": "flowed"}),
        ('multipart/mixed; boundary="x"; boundary="y"', "multipart/mixed", {"boundary": "x"}),
        ("multipart/mixed; boundary==_Part_1=_", "multipart/mixed", {"boundary": "=_Part_1=_"}),
        ('application/pdf; name="a \\"q\\" b.pdf"', "application/pdf", {"name": 'a "q" b.pdf'}),
        ('application/pdf; name="=?utf-8?q?caf=C3=A9.pdf?="', "application/pdf", {"name": "café.pdf"}),
        ('application/pdf; x="=?utf-8?q?kept?="', "application/pdf", {"x": "=?utf-8?q?kept?="}),
        # RFC 2231 §3-§4 examples
        (
            'message/external-body; access-type=URL; URL*0="ftp://";'
            ' URL*1="cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar"',
            "message/external-body",
            {"access-type": "URL", "url": "ftp://cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar"},
        ),
        (
            "application/x-stuff; title*=us-ascii'en-us'This%20is%20%2A%2A%2Afun%2A%2A%2A",
            "application/x-stuff",
            {"title": "This is ***fun***"},
        ),
        (
            "application/x-stuff; title*0*=us-ascii'en'This%20is%20even%20more%20;"
            ' title*1*=%2A%2A%2Afun%2A%2A%2A%20; title*2="isn\'t it!"',
            "application/x-stuff",
            {"title": "This is even more ***fun*** isn't it!"},
        ),
        ("text/plain; name*1=b; name*0=a; name*3=d", "text/plain", {"name": "ab"}),
        ("text/plain; name*0*=utf-8''caf%C3; name*1*=%A9", "text/plain", {"name": "café"}),
        ("text/plain; name*=x-unknown''caf%E9", "text/plain", {"name": "caf\ufffd"}),
        ("text", "", {}),
        ("text/plain junk; charset=utf-8", "text/plain", {"charset": "utf-8"}),
        ('text/plain; charset="unterminated', "text/plain", {"charset": "unterminated"}),
    ],
)
def test_content_type_parameters(value: str, head: str, params: dict[str, str]) -> None:
    """Type, subtype and parameters as RFC 2045 and RFC 2231 define them, with the usual leniencies."""
    parsed = parse_parameters(value, content_type=True)
    assert (parsed.value, parsed.params) == (head, params)


def test_content_disposition() -> None:
    """A disposition type and its parameters; an RFC 2231 filename is decoded in its charset."""
    parsed = parse_parameters("Attachment; filename*=iso-8859-1''r%E9sum%E9.pdf; size=3", content_type=False)
    assert (parsed.value, parsed.params) == ("attachment", {"filename": "résumé.pdf", "size": "3"})
    assert parse_parameters("; filename=x", content_type=False).value == ""


def test_deep_comments_in_parameters_do_not_recurse() -> None:
    """100,000 nested comments in a Content-Type are skipped without recursion."""
    deep = "(" * 100_000 + ")" * 100_000
    parsed = parse_parameters(f"text/plain; {deep} charset=utf-8", content_type=True)
    assert parsed.params == {"charset": "utf-8"}
    assert "nesting" in parsed.problems
