"""ARC (RFC 8617) on port 25: the chain's result in Authentication-Results, and trusted sealers against DMARC.

The story of each test: carol@remote.example (DKIM-signed, DMARC p=reject)
writes to a mailing list at lists.example; the list adds a footer to the
subject, which breaks carol's signature, records what it saw in an
Authentication-Results field of its own and seals the message with dkimpy's
ARC signer, then sends it on to bob@example.com from 127.0.0.1 with its own
bounce address (SPF passes for lists.example, not aligned with carol's
From). Every key is published in the loopback DNS server.
"""

from __future__ import annotations

import asyncio

import dkim as dkimpy
import pytest

from relate.mail import dkim
from tests.support import make_message

from .conftest import Dns, Smtp
from .test_mailauth import ACCEPTED, BOB, REFUSED, deliver, publish, results, signed, summary, txt

LIST_BOUNCES = "list-bounces@lists.example"


@pytest.fixture(scope="module")
def keys() -> dict[str, dkim.DkimKey]:
    """carol's domain's DKIM key and the list's ARC key (RSA 2048), made once for the module."""
    return {"remote": dkim.generate("sel", "rsa"), "arc": dkim.generate("arc", "rsa")}


def seal(message: bytes, key: dkim.DkimKey, sealer: str, saw: str) -> bytes:
    """``message`` as ``sealer`` forwards it: its Authentication-Results (``saw``) and a new ARC set on top."""
    message = f"Authentication-Results: {sealer}; {saw}\r\n".encode() + message
    arc_set = dkimpy.arc_sign(
        message, key.selector.encode(), sealer.encode(), key.private_key.encode(), sealer.encode()
    )
    return b"".join(arc_set) + message


def through_list(keys: dict[str, dkim.DkimKey], saw: str = "dkim=pass header.d=remote.example; dmarc=pass") -> bytes:
    """carol's signed message as the list sends it on: subject changed (her signature broken), then sealed."""
    original = signed(make_message(subject="Meeting"), keys["remote"])
    return seal(original.replace(b"Subject: Meeting", b"Subject: [list] Meeting"), keys["arc"], "lists.example", saw)


@pytest.fixture
def published(dns: Dns, keys: dict[str, dkim.DkimKey]) -> Dns:
    """carol's key and p=reject, the list's ARC key and SPF record."""
    publish(dns, keys["remote"])
    txt(dns, "_dmarc.remote.example", "v=DMARC1; p=reject")
    publish(dns, keys["arc"], "lists.example")
    txt(dns, "lists.example", "v=spf1 ip4:127.0.0.1 -all")
    return dns


async def test_mail_without_arc_sets_says_arc_none(smtp: Smtp, dns: Dns) -> None:
    """A message with no ARC field gets arc=none in the header, and the REST-visible result says so."""
    assert await deliver(smtp, make_message()) == ACCEPTED
    (stored,) = await smtp.inbox(BOB)
    assert summary(stored)["arc"] == ["none"]


async def test_a_passing_chain_is_reported(smtp: Smtp, published: Dns, keys: dict[str, dkim.DkimKey]) -> None:
    """The list's sealed message: arc=pass with header.oldest-pass and smtp.remote-ip; with no trusted sealer
    configured DMARC still fails (p=reject), so it is filed in Junk under dmarc_reject: junk."""
    smtp.cfg.smtp.mailauth.dmarc_reject = "junk"
    assert await deliver(smtp, through_list(keys), LIST_BOUNCES) == ACCEPTED
    (stored,) = await smtp.inbox(BOB, "Junk")
    (arc,) = [e for e in results(stored) if e.method == "arc"]
    assert (arc.result, arc.properties) == ("pass", {"header.oldest-pass": "0", "smtp.remote-ip": "127.0.0.1"})
    assert b"arc=pass (i=1 as.d=lists.example)" in stored
    assert summary(stored)["dkim"] == ["fail"]
    assert summary(stored)["dmarc"] == ["fail"]


async def test_no_trusted_sealer_means_no_override(smtp: Smtp, published: Dns, keys: dict[str, dkim.DkimKey]) -> None:
    """By default (no trusted sealers) a passing chain changes nothing: the p=reject failure is refused."""
    assert await deliver(smtp, through_list(keys), LIST_BOUNCES) == REFUSED
    assert await smtp.inbox(BOB) == []


async def test_trusted_sealer_overrides_dmarc_reject(smtp: Smtp, published: Dns, keys: dict[str, dkim.DkimKey]) -> None:
    """lists.example trusted and its seal saying dmarc=pass: delivered to INBOX, dmarc=fail noted as overridden."""
    smtp.cfg.smtp.mailauth.arc_trusted_sealers = ["Lists.Example"]
    assert await deliver(smtp, through_list(keys), LIST_BOUNCES) == ACCEPTED
    (stored,) = await smtp.inbox(BOB)
    assert summary(stored)["arc"] == ["pass"]
    assert summary(stored)["dmarc"] == ["fail"]
    assert b"dmarc=fail (p=reject dis=reject override=arc as.d=lists.example)" in stored


async def test_a_broken_chain_fails_and_overrides_nothing(
    smtp: Smtp, published: Dns, keys: dict[str, dkim.DkimKey]
) -> None:
    """The message changed after the list sealed it: arc=fail with a reason, and the trusted list does not help."""
    smtp.cfg.smtp.mailauth.arc_trusted_sealers = ["lists.example"]
    smtp.cfg.smtp.mailauth.dmarc_reject = "junk"
    tampered = through_list(keys).replace(b"this is a test.", b"this is a trap.")
    assert await deliver(smtp, tampered, LIST_BOUNCES) == ACCEPTED
    assert await smtp.inbox(BOB) == []
    (stored,) = await smtp.inbox(BOB, "Junk")
    (arc,) = [e for e in results(stored) if e.method == "arc"]
    assert arc.result == "fail"
    assert "did not validate" in arc.reason


async def test_a_trusted_sealer_that_saw_dmarc_fail_vouches_for_nothing(
    smtp: Smtp, published: Dns, keys: dict[str, dkim.DkimKey]
) -> None:
    """The trusted list's own results said dmarc=fail (it forwarded a forgery): the chain passes, DMARC stands."""
    smtp.cfg.smtp.mailauth.arc_trusted_sealers = ["lists.example"]
    forwarded = through_list(keys, saw="dkim=fail header.d=remote.example; dmarc=fail")
    assert await deliver(smtp, forwarded, LIST_BOUNCES) == REFUSED


async def test_trust_runs_down_the_chain_through_trusted_sealers_only(
    smtp: Smtp, published: Dns, keys: dict[str, dkim.DkimKey]
) -> None:
    """The list's message forwarded again by fwd.example (which saw arc=pass, dmarc=fail): with only the list
    trusted it is refused (the newest sealer is not trusted); with both trusted, the list's dmarc=pass counts."""
    publish(published, keys["arc"], "fwd.example")
    txt(published, "fwd.example", "v=spf1 ip4:127.0.0.1 -all")
    twice = seal(through_list(keys), keys["arc"], "fwd.example", "arc=pass; dmarc=fail")
    smtp.cfg.smtp.mailauth.arc_trusted_sealers = ["lists.example"]
    assert await deliver(smtp, twice, "fwd@fwd.example") == REFUSED
    smtp.cfg.smtp.mailauth.arc_trusted_sealers = ["lists.example", "fwd.example"]
    assert await deliver(smtp, twice, "fwd@fwd.example") == ACCEPTED
    (stored,) = await smtp.inbox(BOB)
    assert b"arc=pass (i=2 as.d=fwd.example) header.oldest-pass=0" in stored
    assert b"override=arc as.d=lists.example" in stored


async def test_dns_trouble_with_a_trusted_sealers_key_defers(
    smtp: Smtp, published: Dns, keys: dict[str, dkim.DkimKey]
) -> None:
    """The trusted list's ARC key cannot be looked up (SERVFAIL): 451 4.7.0, not a refusal for good."""
    smtp.cfg.smtp.mailauth.arc_trusted_sealers = ["lists.example"]
    del published.zone.records[("arc._domainkey.lists.example", "TXT")]
    published.zone.fail.add("arc._domainkey.lists.example")
    assert await deliver(smtp, through_list(keys), LIST_BOUNCES) == ["250 2.1.0", "250 2.1.5", "451 4.7.0"]
    smtp.cfg.smtp.mailauth.arc_trusted_sealers = []
    assert await deliver(smtp, through_list(keys), LIST_BOUNCES) == REFUSED  # untrusted: DMARC decides


async def test_a_large_sealed_message_is_verified(smtp: Smtp, published: Dns, keys: dict[str, dkim.DkimKey]) -> None:
    """A 2 MB message through the list (verified in a worker thread) passes ARC and is delivered on its word."""
    smtp.cfg.smtp.mailauth.arc_trusted_sealers = ["lists.example"]
    body = b"".join(b"line %07d of a long list message\r\n" % i for i in range(60_000))

    def build() -> bytes:  # signing and sealing 2 MB takes longer than the test's event loop may be held
        original = signed(make_message(subject="Meeting", body=body), keys["remote"])
        changed = original.replace(b"Subject: Meeting", b"Subject: [list] Meeting")
        return seal(changed, keys["arc"], "lists.example", "dmarc=pass")

    sealed = await asyncio.to_thread(build)
    assert await deliver(smtp, sealed, LIST_BOUNCES) == ACCEPTED
    (stored,) = await smtp.inbox(BOB)
    assert summary(stored)["arc"] == ["pass"]


async def test_more_sets_than_the_bound_fail_unverified(smtp: Smtp, dns: Dns) -> None:
    """Eleven ARC sets (more than arc.MAX_SETS): arc=fail saying so, and the message is delivered as DMARC says."""
    sets = "".join(
        f"ARC-Seal: i={i}; cv=pass; a=rsa-sha256; d=x.example; s=s; b=AA==\r\n"
        f"ARC-Message-Signature: i={i}; a=rsa-sha256; d=x.example; s=s; h=from; bh=AA==; b=AA==\r\n"
        f"ARC-Authentication-Results: i={i}; x.example; dmarc=pass\r\n"
        for i in range(11, 0, -1)
    )
    assert await deliver(smtp, sets.encode() + make_message()) == ACCEPTED
    (stored,) = await smtp.inbox(BOB)
    (arc,) = [e for e in results(stored) if e.method == "arc"]
    assert (arc.result, arc.reason) == ("fail", "more than 10 ARC sets: not verified")
