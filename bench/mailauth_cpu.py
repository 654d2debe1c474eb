"""Mail-authentication CPU per message, in this process: DKIM verification (ours beside dkimpy's) and the whole
port-25 check (``Checker.inbound``) with every DNS answer in the cache.

Pure CPU: no database, no daemon, no socket. ``--messages`` distinct messages
of about ``--size`` bytes (bench/_common's make_message) are DKIM-signed with
an RSA 2048 key, relaxed/simple (what relate and most senders sign with) and
relaxed/relaxed (Gmail's); each workload runs ``--repeat`` times over all of
them and the cheapest run counts, as CPU time of this thread per message
(on a busy machine, the figure to compare). Every result is checked (each
signature passes, each verdict is deliver with spf, dkim and dmarc pass).

Workloads:

- ``dkim relaxed/simple``, ``dkim relaxed/relaxed``: one signature verified
  from the message bytes and the key record, by relate.mailauth.dkimverify
  and by dkimpy (``dkim.DKIM.verify``, with relate's OpenSSL RSA check in
  place of its own, as relate.mailauth.dkim installs it for ARC).
- ``Checker.inbound``: SPF of MAIL FROM and HELO, DKIM, DMARC and the
  Authentication-Results field, answers from relate.mailauth.dns's cache.

Usage: ``.venv/bin/python bench/mailauth_cpu.py [--messages 500] [--size 10240] [--repeat 3] [--json-only]``.
The table goes to stdout, then one JSON line; progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import dkim as dkimpy
import dns.asyncresolver
from _common import fmt, json_line, make_message, ratio, say, table

from relate.config import Config
from relate.mail import dkim
from relate.mail.spool import Spool
from relate.mailauth import dkimverify
from relate.mailauth.dns import Dns
from relate.mailauth.verdict import DELIVER, Checker

SENDER_DOMAIN = "client.example"
HELO = "client.bench.test"


def best(repeat: int, run: Callable[[], None], count: int) -> float:
    """The cheapest of ``repeat`` runs, in µs of this thread's CPU per message."""
    run()  # warm: caches, the key parsed
    cheapest = float("inf")
    for _ in range(repeat):
        start = time.thread_time()
        run()
        cheapest = min(cheapest, time.thread_time() - start)
    return cheapest / count * 1e6


def signed(messages: list[bytes], key: dkim.DkimKey, canon: tuple[bytes, bytes]) -> list[bytes]:
    out = []
    for m in messages:
        field = dkimpy.sign(
            m, key.selector.encode(), SENDER_DOMAIN.encode(), key.private_key.encode(), canonicalize=canon
        )
        out.append(field + m)
    return out


def dkim_workload(messages: list[bytes], record: bytes, repeat: int) -> dict[str, float]:
    def ours() -> None:
        for m in messages:
            dkimverify.Verifier(m).verify(0, record)

    def theirs() -> None:
        for m in messages:
            if not dkimpy.DKIM(m).verify(dnsfunc=lambda name, timeout=5: record):
                raise AssertionError("dkimpy did not pass a good signature")

    return {"relate": best(repeat, ours, len(messages)), "dkimpy": best(repeat, theirs, len(messages))}


def inbound_workload(messages: list[bytes], key: dkim.DkimKey, repeat: int) -> float:
    answers = Dns(dns.asyncresolver.Resolver(configure=False))
    spf = ["v=spf1 ip4:127.0.0.1 -all"]
    for name, values in (
        (SENDER_DOMAIN, spf),
        (HELO, spf),
        (f"_dmarc.{SENDER_DOMAIN}", ["v=DMARC1; p=reject"]),
        (f"{key.selector}._domainkey.{SENDER_DOMAIN}", [key.txt_record()]),
    ):
        answers._answers.put((name, "TXT"), values, 3600)

    async def nothing_hosted(domains: list[str]) -> set[str]:
        return set()

    checker = Checker(Config(), answers, nothing_hosted)

    @contextlib.asynccontextmanager
    async def hold(size: int) -> AsyncIterator[None]:
        yield None

    async def run() -> None:
        for m in messages:
            verdict = await checker.inbound(
                client="127.0.0.1", helo=HELO, mail_from=f"sender@{SENDER_DOMAIN}", head=m, spool=Spool.of(m), hold=hold
            )
            results = (verdict.action, verdict.spf and verdict.spf.result, verdict.dkim[0].result)
            if results != (DELIVER, "pass", "pass") or verdict.dmarc is None or verdict.dmarc.result != "pass":
                raise AssertionError(f"unexpected verdict {verdict}")

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(checker.prepare())
        return best(repeat, lambda: loop.run_until_complete(run()), len(messages))
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    quiet = args.json_only
    key = dkim.generate("bench", "rsa")
    plain = [make_message(i, args.size, f"sender@{SENDER_DOMAIN}", "user1@bench.test") for i in range(args.messages)]
    record = key.txt_record().encode()
    figures: dict[str, Any] = {}
    rows = []
    for canon in ((b"relaxed", b"simple"), (b"relaxed", b"relaxed")):
        name = "dkim " + b"/".join(canon).decode()
        say(f"{name}: signing and verifying {args.messages} messages", quiet=quiet)
        found = dkim_workload(signed(plain, key, canon), record, args.repeat)
        figures[name] = found
        rows.append([name, found["relate"], found["dkimpy"], ratio(found["relate"], found["dkimpy"])])
    say("Checker.inbound", quiet=quiet)
    inbound = inbound_workload(signed(plain, key, (b"relaxed", b"simple")), key, args.repeat)
    figures["Checker.inbound"] = {"relate": inbound}
    rows.append(["Checker.inbound (SPF x2, DKIM, DMARC, field)", inbound, "-", "-"])
    if not quiet:
        print(f"Mail authentication, CPU µs per message of {len(plain[0])} bytes (cheapest of {args.repeat} runs)")
        print(table(["workload", "relate", "dkimpy", "relate/dkimpy"], [[r[0], *map(fmt, r[1:])] for r in rows]))
    print(json_line({"benchmark": "mailauth_cpu", "params": vars(args), "us_per_message": figures}))


if __name__ == "__main__":
    main()
