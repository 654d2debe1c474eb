"""BODY/BODYSTRUCTURE rendered from the stored structure's JSON text, remembered within a bounded budget."""

from __future__ import annotations

import json

from relate.imap import fetch as fetching
from relate.imap.parser import FetchAtt, Section
from relate.mail.imapwire import body_structure
from relate.mail.mime import parse_message

PLAIN = parse_message(b"From: a@example.test\r\nSubject: plain\r\n\r\nhello there\r\n").bodystructure
MIXED = parse_message(
    b"From: a@example.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\none\r\n"
    b"--b\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n"
    b"--b--\r\n"
).bodystructure


def test_header_sections_do_not_read_the_body_structure() -> None:
    header = FetchAtt("BODY[]", Section((), "HEADER.FIELDS", ("From",)), peek=True)
    assert fetching.columns((header,)) == frozenset({"header_end"})
    part = FetchAtt("BODY[]", Section((1,)), peek=True)
    assert fetching.columns((part,)) == frozenset({"bodystructure", "header_end"})
    # BODYSTRUCTURE beside a numbered part renders from the decoded structure the part needs anyway.
    assert fetching.columns((FetchAtt("BODYSTRUCTURE"), part)) == frozenset({"bodystructure", "header_end"})
    assert fetching.columns((FetchAtt("BODYSTRUCTURE"),)) == frozenset({"bodystructure_text"})


def test_rendered_from_text_as_from_the_structure() -> None:
    for structure in (PLAIN, MIXED):
        row = {"uid": 1, "bodystructure_text": json.dumps(structure)}
        for _ in range(2):  # the second time from the memo
            out = fetching.render(row, (FetchAtt("BODY"), FetchAtt("BODYSTRUCTURE")), utf8=False)
            assert out == (
                b"(BODY "
                + body_structure(structure, extended=False)
                + b" BODYSTRUCTURE "
                + body_structure(structure, extended=True)
                + b")"
            )


def test_memo_stays_within_its_budget() -> None:
    memo = fetching.WireMemo(10_000)
    for n in range(1000):
        memo.put((json.dumps({"n": n, "pad": "x" * 100}), True, False), b"w" * 50)
        assert memo.used <= memo.budget
    newest = (json.dumps({"n": 999, "pad": "x" * 100}), True, False)
    assert memo.get(newest) == b"w" * 50
    assert memo.get((json.dumps({"n": 0, "pad": "x" * 100}), True, False)) is None
    memo.put(("y" * 20_000, True, False), b"w")  # bigger than the whole budget: not kept
    assert memo.get(("y" * 20_000, True, False)) is None
    assert memo.get(newest) == b"w" * 50


def test_only_header_items_read_the_header_alone() -> None:
    header = FetchAtt("BODY[]", Section((), "HEADER"), peek=True)
    fields = FetchAtt("BODY[]", Section((), "HEADER.FIELDS", ("Subject",)), peek=True)
    assert fetching.header_only((FetchAtt("UID"), header, fields, FetchAtt("RFC822.HEADER")))
    assert not fetching.header_only((header, FetchAtt("BODY[]", Section((), "TEXT"), peek=True)))
    assert not fetching.header_only((header, FetchAtt("BODY[]", Section((1,), "HEADER"), peek=True)))
    assert not fetching.header_only((FetchAtt("RFC822"),))
