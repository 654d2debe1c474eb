"""DKIM: mail from a hosted domain with a key leaves signed, and the published DNS record verifies it."""

from __future__ import annotations

import asyncio
import json
import os
import re

import dkim
import pytest
from typer.testing import CliRunner

from relate.mailauth.dns import Dns
from relate.runtime.resolver import make_resolver
from relate.services import accounts
from relate.services import dns as dns_service
from relatectl.main import app

from .conftest import Harness, Transaction
from .helpers import ALICE


def relatectl(dsn: str, *args: str) -> str:
    """Run relatectl against the test's database (in a worker thread: it runs its own event loop); its stdout."""
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith("RELATE_")}
    env.update({"RELATE_DATABASE__DSN": dsn, "RELATE_HOSTNAME": "mail.example.com", "NO_COLOR": "1"})
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


async def published_record(h: Harness, domain: str, selector: str) -> str:
    """The DKIM TXT value of ``domain``'s records as `relatectl domain dns` lists them, strings joined."""
    rows = await dns_service.records(h.pool, h.cfg, domain)
    (row,) = [r for r in rows if r["name"] == f"{selector}._domainkey.{domain}." and r["type"] == "TXT"]
    strings = re.findall(r'"([^"]*)"', row["value"])
    assert all(len(s) <= 255 for s in strings)
    return "".join(strings)


def dns_for(records: dict[str, str]):  # type: ignore[no-untyped-def]
    """A dkimpy ``dnsfunc`` answering TXT lookups from ``records`` (name without the final dot)."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode().rstrip("."))
        return value.encode() if value is not None else None

    return lookup


async def deliver_one(h: Harness, sender: str = ALICE) -> Transaction:
    sink = h.net.sinks.get("127.0.0.2") or await h.net.mta("127.0.0.2")
    if not h.net.zone.records.get(("remote.test", "MX")):
        h.net.mx("remote.test", (10, "mx1.remote.test", "127.0.0.2"))
    before = len(sink.transactions)
    await h.queue(["friend@remote.test"], sender=sender, subject="Signed, sealed")
    await h.run()
    assert len(sink.transactions) == before + 1
    return sink.transactions[-1]


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
async def test_signature_verifies_with_the_published_record(h: Harness, algorithm: str) -> None:
    """After `relatectl dkim keygen`, mail from example.com has a DKIM-Signature the published TXT record verifies."""
    out = await asyncio.to_thread(
        relatectl, h.dsn, "dkim", "keygen", "example.com", "--algorithm", algorithm, "--selector", "s2026", "--json"
    )
    key = json.loads(out)
    assert key["name"] == "s2026._domainkey.example.com."
    assert key["algorithm"] == {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}[algorithm]
    record = await published_record(h, "example.com", "s2026")
    assert record == key["value"]
    assert record.startswith(f"v=DKIM1; k={algorithm}; p=")

    seen = await deliver_one(h)
    data = seen.data
    assert data.startswith(b"DKIM-Signature:")
    header = data.split(b"\r\n\r\n", 1)[0].decode()
    assert "d=example.com" in header
    assert "s=s2026" in header
    assert f"a={key['algorithm']}" in header

    txt = {"s2026._domainkey.example.com": record}
    assert dkim.verify(data, dnsfunc=dns_for(txt)) is True
    tampered = data.replace(b"Hello there.", b"Hello THERE.")
    assert tampered != data
    assert dkim.verify(tampered, dnsfunc=dns_for(txt)) is False
    resubjected = data.replace(b"Subject: Signed, sealed", b"Subject: Signed, forged")
    assert resubjected != data
    assert dkim.verify(resubjected, dnsfunc=dns_for(txt)) is False


async def test_only_domains_with_a_key_are_signed(h: Harness) -> None:
    """Without a key mail goes unsigned; after keygen for example.com, mail from example.org is still unsigned."""
    await accounts.add_domain(h.pool, "example.org")
    await accounts.add_user(h.pool, "carol@example.org", "Carol")

    assert b"DKIM-Signature" not in (await deliver_one(h)).data.split(b"\r\n\r\n")[0]

    key, _ = await dns_service.dkim_keygen(h.pool, "example.com", kind="ed25519", selector="k1")
    signed = await deliver_one(h)
    unsigned = await deliver_one(h, sender="carol@example.org")
    assert signed.data.startswith(b"DKIM-Signature:")
    assert b"DKIM-Signature" not in unsigned.data.split(b"\r\n\r\n")[0]
    assert dkim.verify(signed.data, dnsfunc=dns_for({"k1._domainkey.example.com": key.txt_record()})) is True


async def test_a_new_key_signs_only_once_its_record_is_published(h: Harness) -> None:
    """Rotation: a second keygen makes a pending key; the old one keeps signing (its record is what receivers
    have) until the delivery daemon sees the new record in DNS, then the new one signs and the old one stays
    published as previous until retired."""
    old, state = await dns_service.dkim_keygen(h.pool, "example.com", kind="ed25519", selector="old")
    assert state == "active"
    new, state = await dns_service.dkim_keygen(h.pool, "example.com", kind="ed25519", selector="new")
    assert state == "pending"
    rows = await dns_service.records(h.pool, h.cfg, "example.com")
    assert [r["name"] for r in rows if "_domainkey" in r["name"]] == [
        "old._domainkey.example.com.",
        "new._domainkey.example.com.",
    ]
    checks = Dns(make_resolver(h.cfg.delivery))
    assert await dns_service.promote_published(h.pool, checks, every=0) == []  # not in DNS yet
    assert "s=old" in (await deliver_one(h)).data.split(b"\r\n\r\n", 1)[0].decode()

    h.net.zone.add("new._domainkey.example.com", "TXT", dns_service.txt_strings(new.txt_record()))
    assert await dns_service.promote_published(h.pool, checks, every=0) == ["new._domainkey.example.com"]
    seen = await deliver_one(h)
    assert "s=new" in seen.data.split(b"\r\n\r\n", 1)[0].decode()
    assert dkim.verify(seen.data, dnsfunc=dns_for({"new._domainkey.example.com": new.txt_record()})) is True
    states = {k["selector"]: k["state"] for k in await dns_service.dkim_keys(h.pool, "example.com")}
    assert states == {"old": "previous", "new": "active"}
    assert old.selector == "old"


async def test_bare_cr_and_lf_in_the_body_keep_the_signature_valid(h: Harness) -> None:
    """A stored body with a bare CR, a bare LF, a leading dot and no final CRLF arrives signed and verifying."""
    key, _ = await dns_service.dkim_keygen(h.pool, "example.com", kind="rsa", selector="crlf")
    sink = await h.net.mta("127.0.0.2")
    h.net.mx("remote.test", (10, "mx1.remote.test", "127.0.0.2"))
    body = "one\rtwo\nthree\r\n.four\r\n..five\r\nsix"
    await h.queue(["friend@remote.test"], body=body)
    await h.run()

    (seen,) = sink.transactions
    assert dkim.verify(seen.data, dnsfunc=dns_for({"crlf._domainkey.example.com": key.txt_record()})) is True
    # What arrived is the stored text with every line end made CRLF, dot lines intact.
    assert seen.data.split(b"\r\n\r\n", 1)[1] == b"one\r\ntwo\r\nthree\r\n.four\r\n..five\r\nsix\r\n"
