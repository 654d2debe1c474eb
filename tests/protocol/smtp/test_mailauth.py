"""SPF, DKIM and DMARC on port 25: the Authentication-Results field written, and what policy does with the mail.

The client connects from 127.0.0.1; remote.example's records live in the
loopback DNS server the daemon asks. Messages are DKIM-signed here with
dkimpy (through relate.mail.dkim) with keys made for the test.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from relate.mail import dkim
from relate.mailauth import authres
from relate.services.dns import txt_strings
from tests.support import make_message

from .conftest import Dns, Smtp
from .helpers import Client, outbound, run_session
from .test_submission import submission_client

BOB = "bob@example.com"
ACCEPTED = ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
REFUSED = ["250 2.1.0", "250 2.1.5", "550 5.7.1"]


@pytest.fixture(scope="module")
def keys() -> dict[str, dkim.DkimKey]:
    """An RSA (2048 bits) and an Ed25519 key, made once for the module."""
    return {"rsa": dkim.generate("sel", "rsa"), "ed25519": dkim.generate("ed", "ed25519")}


def txt(dns: Dns, name: str, value: str) -> None:
    dns.zone.add(name, "TXT", txt_strings(value))


def publish(dns: Dns, key: dkim.DkimKey, domain: str = "remote.example") -> None:
    txt(dns, f"{key.selector}._domainkey.{domain}", key.txt_record())


def signed(message: bytes, *keys: dkim.DkimKey, domain: str = "remote.example") -> bytes:
    for key in keys:
        message = dkim.sign(message, domain, key) + message
    return message


async def deliver(smtp: Smtp, message: bytes, mail_from: str = "carol@remote.example") -> list[str]:
    return [r.head for r in await run_session(smtp.mx, mail_from, [BOB], message)]


def results(stored: bytes) -> list[authres.Entry]:
    """The entries of the Authentication-Results field of mail.example.com at the top of a stored message."""
    head = stored.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    fields = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + line)
        elif ":" in line:
            name, value = line.split(":", 1)
            fields.append((name, value))
    found = authres.find_ours(fields, "mail.example.com")
    assert found is not None, head
    return found


def summary(stored: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for entry in results(stored):
        out.setdefault(entry.method, []).append(entry.result)
    return out


async def test_all_pass_is_delivered_with_the_header(smtp: Smtp, dns: Dns, keys: dict[str, dkim.DkimKey]) -> None:
    """SPF, DKIM (RSA) and DMARC p=reject all pass: INBOX, and the header names each identity."""
    txt(dns, "remote.example", "v=spf1 ip4:127.0.0.1 -all")
    publish(dns, keys["rsa"])
    txt(dns, "_dmarc.remote.example", "v=DMARC1; p=reject")
    message = signed(make_message(), keys["rsa"])
    assert await deliver(smtp, message) == ACCEPTED
    (stored,) = await smtp.inbox(BOB)
    assert stored.endswith(message)
    assert stored.startswith(b"Return-Path: <carol@remote.example>\r\nAuthentication-Results: mail.example.com;")
    entries = {e.method: e for e in reversed(results(stored))}  # the first of each: spf for MAIL FROM, not HELO
    assert entries["spf"].result == "pass"
    assert entries["spf"].properties["smtp.mailfrom"] == "carol@remote.example"
    assert entries["dkim"].result == "pass"
    assert entries["dkim"].properties["header.d"] == "remote.example"
    assert entries["dkim"].properties["header.s"] == "sel"
    assert entries["dkim"].properties["header.a"] == "rsa-sha256"
    assert entries["dmarc"].result == "pass"
    assert entries["dmarc"].properties["header.from"] == "remote.example"


async def test_every_signature_is_verified(smtp: Smtp, dns: Dns, keys: dict[str, dkim.DkimKey]) -> None:
    """RSA and Ed25519 signatures on one message each get their own dkim=pass."""
    publish(dns, keys["rsa"])
    publish(dns, keys["ed25519"])
    assert await deliver(smtp, signed(make_message(), keys["rsa"], keys["ed25519"])) == ACCEPTED
    (stored,) = await smtp.inbox(BOB)
    dkims = [e for e in results(stored) if e.method == "dkim"]
    assert sorted((e.result, e.properties["header.a"]) for e in dkims) == [
        ("pass", "ed25519-sha256"),
        ("pass", "rsa-sha256"),
    ]


async def test_dkim_fail_permerror_temperror_none(smtp: Smtp, dns: Dns, keys: dict[str, dkim.DkimKey]) -> None:
    """A body changed after signing fails; a missing key is permerror; a key DNS cannot give is temperror."""
    publish(dns, keys["rsa"])
    tampered = signed(make_message(body="original\r\n"), keys["rsa"]).replace(b"original", b"changed!")
    assert await deliver(smtp, tampered) == ACCEPTED
    assert await deliver(smtp, signed(make_message(), keys["rsa"], domain="nokey.example")) == ACCEPTED
    dns.zone.fail.add("sel._domainkey.broken.example")
    assert await deliver(smtp, signed(make_message(), keys["rsa"], domain="broken.example")) == ACCEPTED
    assert await deliver(smtp, make_message()) == ACCEPTED
    stored = await smtp.inbox(BOB)
    assert [summary(s)["dkim"] for s in stored] == [["fail"], ["permerror"], ["temperror"], ["none"]]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("v=spf1 ip4:127.0.0.1 -all", "pass"),
        ("v=spf1 -all", "fail"),
        ("v=spf1 ~all", "softfail"),
        ("v=spf1 ?all", "neutral"),
        (None, "none"),
        ("v=spf1 ip4:127.0.0.1 bogus -all", "permerror"),
    ],
)
async def test_spf_result_is_in_the_header(smtp: Smtp, dns: Dns, record: str | None, expected: str) -> None:
    """Each SPF result of MAIL FROM's domain reaches the header; without a DMARC record the mail is delivered."""
    if record is not None:
        txt(dns, "remote.example", record)
    assert await deliver(smtp, make_message()) == ACCEPTED
    (stored,) = await smtp.inbox(BOB)
    assert summary(stored)["spf"][0] == expected
    assert summary(stored)["dmarc"] == ["none"]


async def test_spf_temperror(smtp: Smtp, dns: Dns) -> None:
    """SERVFAIL for the sender's domain: spf=temperror, and DMARC cannot be judged either: delivered."""
    dns.zone.fail.add("remote.example")
    assert await deliver(smtp, make_message()) == ACCEPTED
    (stored,) = await smtp.inbox(BOB)
    assert summary(stored)["spf"][0] == "temperror"


async def test_helo_is_checked_too(smtp: Smtp, dns: Dns) -> None:
    """The HELO name's SPF record is checked and reported as smtp.helo."""
    txt(dns, "client.example.org", "v=spf1 ip4:127.0.0.1 -all")
    assert await deliver(smtp, make_message()) == ACCEPTED
    (stored,) = await smtp.inbox(BOB)
    helo = [e for e in results(stored) if "smtp.helo" in e.properties]
    assert [(e.result, e.properties["smtp.helo"]) for e in helo] == [("pass", "client.example.org")]


async def test_dmarc_reject_is_refused(smtp: Smtp, dns: Dns) -> None:
    """DMARC p=reject, SPF fail, no signature: 550 5.7.1 at the end of DATA, nothing stored."""
    txt(dns, "remote.example", "v=spf1 -all")
    txt(dns, "_dmarc.remote.example", "v=DMARC1; p=reject")
    assert await deliver(smtp, make_message()) == REFUSED
    assert await smtp.inbox(BOB) == []


async def test_dmarc_reject_may_file_in_junk(smtp: Smtp, dns: Dns) -> None:
    """With smtp.mailauth.dmarc_reject: junk the same message is accepted into Junk, not INBOX."""
    smtp.cfg.smtp.mailauth.dmarc_reject = "junk"
    txt(dns, "remote.example", "v=spf1 -all")
    txt(dns, "_dmarc.remote.example", "v=DMARC1; p=reject")
    assert await deliver(smtp, make_message()) == ACCEPTED
    assert await smtp.inbox(BOB) == []
    (stored,) = await smtp.inbox(BOB, "Junk")
    assert summary(stored)["dmarc"] == ["fail"]


async def test_dmarc_quarantine_is_filed_in_junk(smtp: Smtp, dns: Dns) -> None:
    """DMARC p=quarantine failing: accepted, filed in Junk with dmarc=fail."""
    txt(dns, "_dmarc.remote.example", "v=DMARC1; p=quarantine")
    assert await deliver(smtp, make_message()) == ACCEPTED
    assert await smtp.inbox(BOB) == []
    (stored,) = await smtp.inbox(BOB, "Junk")
    assert summary(stored)["dmarc"] == ["fail"]
    assert b"dmarc=fail (p=quarantine dis=quarantine)" in stored


async def test_dmarc_pct_zero_steps_down(smtp: Smtp, dns: Dns) -> None:
    """pct=0: a p=reject failure is never sampled, so it is quarantined (Junk) instead of refused."""
    txt(dns, "_dmarc.remote.example", "v=DMARC1; p=reject; pct=0")
    assert await deliver(smtp, make_message()) == ACCEPTED
    (stored,) = await smtp.inbox(BOB, "Junk")
    assert b"dmarc=fail (p=reject dis=quarantine)" in stored


async def test_relaxed_and_strict_spf_alignment(smtp: Smtp, dns: Dns) -> None:
    """MAIL FROM at bounce.remote.example passes SPF: aligned with From remote.example relaxed, not strict."""
    txt(dns, "bounce.remote.example", "v=spf1 ip4:127.0.0.1 -all")
    txt(dns, "_dmarc.remote.example", "v=DMARC1; p=reject")
    assert await deliver(smtp, make_message(), "carol@bounce.remote.example") == ACCEPTED
    (stored,) = await smtp.inbox(BOB)
    assert summary(stored)["dmarc"] == ["pass"]
    dns.zone.records[("_dmarc.remote.example", "TXT")] = [txt_strings("v=DMARC1; p=reject; aspf=s")]
    smtp.server.checker.dns.forget()
    assert await deliver(smtp, make_message(), "carol@bounce.remote.example") == REFUSED


async def test_relaxed_and_strict_dkim_alignment(smtp: Smtp, dns: Dns, keys: dict[str, dkim.DkimKey]) -> None:
    """A signature of mail.remote.example aligns with From remote.example relaxed, not with adkim=s."""
    publish(dns, keys["rsa"], "mail.remote.example")
    txt(dns, "_dmarc.remote.example", "v=DMARC1; p=reject; adkim=s")
    message = signed(make_message(), keys["rsa"], domain="mail.remote.example")
    assert await deliver(smtp, message) == REFUSED
    dns.zone.records[("_dmarc.remote.example", "TXT")] = [txt_strings("v=DMARC1; p=reject")]
    smtp.server.checker.dns.forget()
    assert await deliver(smtp, message) == ACCEPTED


async def test_subdomain_policy(smtp: Smtp, dns: Dns) -> None:
    """From news.remote.example without a record of its own: the organizational domain's sp= applies, not p=."""
    txt(dns, "_dmarc.remote.example", "v=DMARC1; p=none; sp=reject")
    news = make_message(sender="news@news.remote.example")
    assert await deliver(smtp, news) == REFUSED
    assert await deliver(smtp, make_message()) == ACCEPTED  # remote.example itself: p=none
    dns.zone.records[("_dmarc.remote.example", "TXT")] = [txt_strings("v=DMARC1; p=reject; sp=none")]
    smtp.server.checker.dns.forget()
    assert await deliver(smtp, news) == ACCEPTED
    assert len(await smtp.inbox(BOB)) == 2


async def test_forged_hosted_from_is_refused(smtp: Smtp, dns: Dns) -> None:
    """From: alice@example.com (hosted) over port 25, authenticated by nothing: 550 5.7.1 even with no DMARC record."""
    forged = make_message(sender="Alice <alice@example.com>")
    assert await deliver(smtp, forged) == REFUSED
    assert await deliver(smtp, forged, "alice@example.com") == REFUSED
    sneaky = make_message(sender='"carol@remote.example" <alice@example.com>')
    assert await deliver(smtp, sneaky) == REFUSED
    assert await smtp.inbox(BOB) == []


async def test_hosted_from_with_passing_spf_is_delivered(smtp: Smtp, dns: Dns) -> None:
    """From alice@example.com whose MAIL FROM domain's SPF authorises the client: delivered."""
    txt(dns, "example.com", "v=spf1 ip4:127.0.0.1 -all")
    assert await deliver(smtp, make_message(sender="alice@example.com"), "alice@example.com") == ACCEPTED


async def test_hosted_from_with_dns_trouble_is_deferred(smtp: Smtp, dns: Dns) -> None:
    """From a hosted domain while its SPF record cannot be looked up: 451 4.7.0, to be tried again."""
    dns.zone.fail.add("example.com")
    replies = await deliver(smtp, make_message(sender="alice@example.com"), "alice@example.com")
    assert replies == ["250 2.1.0", "250 2.1.5", "451 4.7.0"]


async def test_forged_results_of_ours_are_removed(smtp: Smtp, dns: Dns) -> None:
    """An incoming Authentication-Results claiming mail.example.com is removed; another host's is kept."""
    message = make_message(
        headers=(
            "Authentication-Results: mail.example.com; dkim=pass header.d=bank.example",
            "Authentication-Results: (comment) MAIL.example.com;\r\n\tdmarc=pass",
            "Authentication-Results: mx.other.example; spf=pass",
        )
    )
    assert await deliver(smtp, message) == ACCEPTED
    (stored,) = await smtp.inbox(BOB)
    assert b"bank.example" not in stored
    assert b"dmarc=pass" not in stored
    assert b"Authentication-Results: mx.other.example; spf=pass\r\n" in stored
    assert stored.count(b"Authentication-Results: mail.example.com;") == 1
    assert stored.endswith(b"\r\n\r\nHello Bob,\r\nthis is a test.\r\n")


async def test_submission_is_marked_authenticated(smtp: Smtp) -> None:
    """Alice's submission: bob's copy says auth=pass smtp.auth=alice@example.com; the queued copy carries none."""
    client = await submission_client(smtp, implicit=True)
    message = make_message(sender="alice@example.com").replace(
        b"\r\n\r\n", b"\r\nAuthentication-Results: mail.example.com; dmarc=pass\r\n\r\n", 1
    )
    replies = await client.mail("alice@example.com", [BOB, "carol@remote.example"], message)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "250 2.0.0"]
    await client.close()
    (stored,) = await smtp.inbox(BOB)
    entries = results(stored)
    assert [(e.method, e.result, e.properties) for e in entries] == [
        ("auth", "pass", {"smtp.auth": "alice@example.com"})
    ]
    assert b"dmarc=pass" not in stored
    (queued,) = await outbound(smtp)
    blob = await smtp.pool.fetchval("SELECT data FROM blobs WHERE hash = $1", queued["blob_hash"])
    assert b"smtp.auth=" not in bytes(blob)


async def test_checks_can_be_turned_off(smtp: Smtp, dns: Dns) -> None:
    """smtp.mailauth.enabled false: no header, no policy (a p=reject failure is delivered)."""
    smtp.cfg.smtp.mailauth.enabled = False
    txt(dns, "_dmarc.remote.example", "v=DMARC1; p=reject")
    assert await deliver(smtp, make_message()) == ACCEPTED
    (stored,) = await smtp.inbox(BOB)
    assert b"Authentication-Results" not in stored


async def test_big_signed_message_does_not_block_the_loop(smtp: Smtp, dns: Dns, keys: dict[str, dkim.DkimKey]) -> None:
    """A 20 MB signed message is verified (dkim=pass) while another client's NOOPs are answered promptly."""
    publish(dns, keys["rsa"])
    body = b"".join(b"line %07d of a long body that is signed\r\n" % i for i in range(500_000))
    message = await asyncio.to_thread(signed, make_message(body=body), keys["rsa"])
    assert await deliver(smtp, message) == ACCEPTED
    other = await Client.connect(smtp.mx)
    assert (await other.cmd("NOOP")).head == "250 2.0.0"
    await other.close()
    (stored,) = await smtp.inbox(BOB)
    assert summary(stored)["dkim"] == ["pass"]


async def test_the_log_has_one_line_per_message_with_its_results(
    smtp: Smtp, dns: Dns, caplog: pytest.LogCaptureFixture
) -> None:
    """A delivered message's results are in its smtp-accepted line; a refused one gets an smtp-authentication
    line with the reason (and no smtp-accepted)."""
    caplog.set_level(logging.INFO, logger="relate.smtp")
    txt(dns, "remote.example", "v=spf1 ip4:127.0.0.1 -all")
    txt(dns, "_dmarc.remote.example", "v=DMARC1; p=reject")
    assert await deliver(smtp, make_message()) == ACCEPTED
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("smtp-")]
    (accepted,) = [line for line in lines if not line.startswith("smtp-session")]
    assert accepted.startswith("smtp-accepted "), accepted
    assert accepted.endswith("spf=pass dkim=none dmarc=pass"), accepted
    caplog.clear()
    assert await deliver(smtp, make_message(), "carol@elsewhere.example") == REFUSED  # From not aligned: p=reject
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("smtp-")]
    (refused,) = [line for line in lines if not line.startswith("smtp-session")]
    assert refused.startswith("smtp-authentication "), refused
    assert "dmarc=fail action=refuse" in refused, refused
