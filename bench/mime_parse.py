"""MIME parsing benchmark: CPU time and peak memory of ``relate.mail.mime.parse_message`` on ordinary and hostile mail.

Pure CPU, in this process: no database, no daemon. Each workload is built in
memory, parsed ``--repeat`` times for the time (the best run is reported, as
CPU time of the parsing thread and as wall time; on a busy machine the CPU
time is the figure to compare), then parsed once more under
``tracemalloc`` for the peak of memory allocated inside ``parse_message``
(the raw message itself, allocated before, is not counted). A workload whose
parse raises reports the exception's name instead of figures.

Workloads:

- ``ordinary``: a mix of everyday messages (plain text, text + HTML
  alternatives, a PDF attachment, a forwarded message, encoded-word headers);
  the time is per message.
- ``subject-16k-words``: a folded ``Subject:`` of 16,000 RFC 2047 encoded words
  (about 370 KiB; issue 12 found this quadratic in the email package).
- ``from-500-parens``: ``From: a <b`` and 500 ``(`` (a RecursionError in the
  email package).
- ``comments-256k``: a 256 KiB ``From:`` of nested and unbalanced comments.
- ``base64-49mb`` / ``text-49mb``: a 49 MB message with one base64
  attachment / one 49 MB text/plain body (issue 12's memory finding).
- ``html-4mb``: a 4 MB HTML body of unclosed tags and entities.
- ``deep-multipart``: 500 nested multiparts.
- ``deep-49mb``: a 49 MB base64 part under 40 nested multiparts (each level
  up to the depth limit scans the part for its boundary).
- ``fields-in-parts``: 400 encapsulated messages of 100 fields each, with a
  hostile 4 KB To (the per-entity field limit and the per-message header-work
  budget).
- ``parts-5000``: one multipart/mixed with 5,000 small parts.

Usage: ``.venv/bin/python bench/mime_parse.py [--repeat 3] [--only NAME ...] [--json-only]``.
The table goes to stdout, then one JSON line; progress to stderr.
"""

from __future__ import annotations

import argparse
import base64
import gc
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import json_line, say, table

MB = 1_000_000


def _crlf(*lines: bytes) -> bytes:
    return b"\r\n".join(lines)


def ordinary() -> list[bytes]:
    """Everyday messages of the kinds an MX sees most."""
    head = _crlf(
        b"From: =?UTF-8?Q?Andr=C3=A9_Pirard?= <andre@example.be>",
        b"To: Bob Example <bob@example.net>, carol@example.org",
        b'Cc: "Smith, John" <john@example.org>',
        b"Subject: =?UTF-8?B?UHLDvGZiZXJpY2h0IGbDvHIgTcOkcno=?=",
        b"Date: Mon, 7 Jul 2025 09:15:00 +0200",
        b"Message-ID: <bench-1@example.be>",
        b"References: <a@example.be> <b@example.be>",
        b"MIME-Version: 1.0",
    )
    text = b"Hello Bob,\r\n\r\nthe figures are attached.\r\n" * 40
    html = b"<html><body><p>Hello <b>Bob</b>,</p><p>the figures &amp; more are attached.</p></body></html>\r\n" * 20
    pdf = base64.encodebytes(os.urandom(30_000)).replace(b"\n", b"\r\n")
    plain = _crlf(head, b"Content-Type: text/plain; charset=utf-8", b"", text)
    alternative = _crlf(
        head,
        b'Content-Type: multipart/alternative; boundary="alt-1"',
        b"",
        b"--alt-1",
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Transfer-Encoding: quoted-printable",
        b"",
        text.replace(b"figures", b"fig=C3=BCres"),
        b"--alt-1",
        b"Content-Type: text/html; charset=utf-8",
        b"",
        html,
        b"--alt-1--",
        b"",
    )
    mixed = _crlf(
        head,
        b'Content-Type: multipart/mixed; boundary="mix-1"',
        b"",
        b"--mix-1",
        b"Content-Type: text/plain; charset=utf-8",
        b"",
        text,
        b"--mix-1",
        b'Content-Type: application/pdf; name="rates.pdf"',
        b"Content-Disposition: attachment; filename*=UTF-8''%E2%82%AC%20rates.pdf",
        b"Content-Transfer-Encoding: base64",
        b"",
        pdf,
        b"--mix-1--",
        b"",
    )
    forward = _crlf(
        head,
        b'Content-Type: multipart/mixed; boundary="fwd"',
        b"",
        b"--fwd",
        b"Content-Type: text/plain",
        b"",
        b"See below.",
        b"--fwd",
        b"Content-Type: message/rfc822",
        b"",
        plain,
        b"--fwd--",
        b"",
    )
    return [plain, alternative, mixed, forward]


def subject_words() -> bytes:
    subject = b"Subject: " + b"\r\n ".join(b"=?utf-8?q?caf=C3=A9?=" for _ in range(16_000))
    return _crlf(b"From: a@example.org", subject, b"", b"body")


def from_parens() -> bytes:
    return _crlf(b"From: a <b" + b"(" * 500, b"", b"body")


def comments() -> bytes:
    value = (b"(" * 40 + b"x\\)" + b")" * 20 + b" a@b.example, ") * 4000
    return _crlf(b"From: " + value[: 256 * 1024], b"", b"body")


def base64_49mb() -> bytes:
    data = base64.encodebytes(os.urandom(35 * MB)).replace(b"\n", b"\r\n")
    return _crlf(
        b"From: a@example.org",
        b"Subject: big attachment",
        b'Content-Type: multipart/mixed; boundary="b"',
        b"",
        b"--b",
        b"Content-Type: text/plain",
        b"",
        b"see attached",
        b"--b",
        b'Content-Type: application/octet-stream; name="big.bin"',
        b"Content-Transfer-Encoding: base64",
        b"",
        data,
        b"--b--",
        b"",
    )


def text_49mb() -> bytes:
    line = b"All work and no play makes Jack a dull boy, " * 2 + b"\r\n"
    return _crlf(
        b"From: a@example.org",
        b"Subject: big text",
        b"Content-Type: text/plain; charset=utf-8",
        b"",
        line * (49 * MB // len(line)),
    )


def html_4mb() -> bytes:
    chunk = b"<div class='x'><p>text &amp; &#x263a; <b><i>" + b"<!-- c -->" + b"<a href='x'>link</a>"
    return _crlf(b"Content-Type: text/html; charset=utf-8", b"", chunk * (4 * MB // len(chunk)) + b"<!-- unclosed")


def deep_49mb() -> bytes:
    """A 49 MB base64 part under 40 nested multiparts: every level up to the depth limit rescans it."""
    data = base64.encodebytes(os.urandom(35 * MB)).replace(b"\n", b"\r\n")
    head = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(40))
    return head + b"Content-Transfer-Encoding: base64\r\n\r\n" + data


def fields_in_parts() -> bytes:
    """400 encapsulated messages of 100 Subject and hostile To fields each (the per-entity and per-message limits)."""
    part = b"Content-Type: message/rfc822\r\n\r\n" + b"Subject: x\r\n" * 99 + b"To: " + b"a:" * 2000 + b"\r\n\r\nx"
    parts = b"".join(b"--p\r\n" + part + b"\r\n" for _ in range(400))
    return b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + parts + b"--p--\r\n"


def deep_multipart() -> bytes:
    raw = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(500))
    return raw + b"\r\ninnermost"


def many_parts() -> bytes:
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(5000))
    return b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + parts + b"--p--\r\n"


WORKLOADS: dict[str, Callable[[], bytes | list[bytes]]] = {
    "ordinary": ordinary,
    "subject-16k-words": subject_words,
    "from-500-parens": from_parens,
    "comments-256k": comments,
    "base64-49mb": base64_49mb,
    "text-49mb": text_49mb,
    "html-4mb": html_4mb,
    "deep-multipart": deep_multipart,
    "deep-49mb": deep_49mb,
    "fields-in-parts": fields_in_parts,
    "parts-5000": many_parts,
}


def measure(parse: Callable[[bytes], Any], messages: list[bytes], repeat: int) -> dict[str, Any]:
    """Best wall and CPU time per message over ``repeat`` runs, and the tracemalloc peak of one more run."""
    size = sum(len(m) for m in messages)
    try:
        best = best_cpu = float("inf")
        for _ in range(repeat):
            gc.collect()
            start, start_cpu = time.perf_counter(), time.thread_time()
            for raw in messages:
                parse(raw)
            best = min(best, (time.perf_counter() - start) / len(messages))
            best_cpu = min(best_cpu, (time.thread_time() - start_cpu) / len(messages))
        gc.collect()
        tracemalloc.start()
        for raw in messages:
            parse(raw)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    except BaseException as exc:
        tracemalloc.stop()
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {"bytes": size // len(messages), "error": type(exc).__name__}
    return {
        "bytes": size // len(messages),
        "ms": round(best * 1000, 3),
        "cpu_ms": round(best_cpu * 1000, 3),
        "peak_mb": round(peak / MB, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per workload (best is kept)")
    parser.add_argument("--only", nargs="*", choices=sorted(WORKLOADS), help="run only these workloads")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    from relate.mail.mime import parse_message  # after argparse: --help works without the package

    sys.setrecursionlimit(1000)  # the interpreter default, as in the daemons
    results: dict[str, dict[str, Any]] = {}
    for name, build in WORKLOADS.items():
        if args.only and name not in args.only:
            continue
        say(f"{name} ...", quiet=args.json_only)
        built = build()
        messages = built if isinstance(built, list) else [built]
        results[name] = measure(parse_message, messages, args.repeat)
        del built, messages
    if not args.json_only:
        rows = [
            [name, r["bytes"], r.get("cpu_ms"), r.get("ms"), r.get("peak_mb"), r.get("error", "")]
            for name, r in results.items()
        ]
        print(table(["workload", "bytes", "CPU ms/message", "wall ms/message", "peak MB", "error"], rows))
    print(json_line({"benchmark": "mime_parse", "python": sys.version.split()[0], "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
