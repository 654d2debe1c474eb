"""MTA-STS (RFC 8461): policies fetched over verified HTTPS, cached in the database, enforced or only logged."""

from __future__ import annotations

import email
import email.message
import gzip
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from relate.runtime.tls import server_context
from relate.testing.ca import TestCa

from .conftest import Harness, Sink
from .helpers import ALICE

POLICY = "version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n"


@dataclass
class PolicyServer:
    """The HTTPS server of mta-sts.sts.test: what it serves, and how often it was asked."""

    ca: TestCa
    body: str = POLICY.format(mode="enforce", mx="mx.sts.test")
    content_type: str = "text/plain"
    status: int = 200
    fetches: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches.append(request.host)
        return web.Response(status=self.status, text=self.body, content_type=self.content_type)


@pytest.fixture
async def sts(h: Harness, tmp_path: Path) -> AsyncIterator[PolicyServer]:
    """sts.test publishes an MTA-STS record (id 1) and serves its policy over HTTPS with a test-CA certificate;
    the delivery daemon trusts that CA (delivery.tls_ca_file) and nothing else."""
    ca = TestCa(tmp_path)
    server = PolicyServer(ca)
    app = web.Application()
    app.router.add_get("/.well-known/mta-sts.txt", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(*ca.issue("mta-sts.sts.test")))
    await site.start()
    assert runner.addresses
    h.cfg.delivery.mta_sts_port = runner.addresses[0][1]
    h.cfg.delivery.tls_ca_file = ca.cert_path
    h.net.zone.add("_mta-sts.sts.test", "TXT", '"v=STSv1; id=1"')
    h.net.zone.add("mta-sts.sts.test", "A", "127.0.0.1")
    yield server
    await runner.cleanup()


async def mx(h: Harness, sts: PolicyServer, address: str, name: str, *, trusted: bool) -> Sink:
    """An MX host of sts.test offering STARTTLS with a certificate for ``name`` from the test CA, or self-signed."""
    if trusted:
        h.net.tls = server_context(*sts.ca.issue(name))
    sink = await h.net.mta(address, starttls=True)
    h.net.mx("sts.test", (10, name, address))
    return sink


def forget_dns(h: Harness) -> None:
    """The worker's DNS cache forgets what it holds, as TTLs would on the clock the test moves."""
    mta_sts = h.worker.sender.mta_sts
    assert mta_sts is not None
    assert mta_sts.resolver.cache is not None
    mta_sts.resolver.cache.flush()
    mta_sts.dns.forget()


async def test_enforce_delivers_over_verified_tls_and_caches_the_policy(h: Harness, sts: PolicyServer) -> None:
    """An enforce policy and an MX with a trusted certificate: delivered over TLS; the policy is fetched once,
    kept in the database with its id and expiry, and used for the next message."""
    sink = await mx(h, sts, "127.0.0.2", "mx.sts.test", trusted=True)
    eid = await h.queue(["a@sts.test"])
    await h.run()
    assert (await h.recipients(eid))["a@sts.test"]["status"] == "sent"
    assert [t.tls for t in sink.transactions] == [True]
    assert sts.fetches == [f"mta-sts.sts.test:{h.cfg.delivery.mta_sts_port}"]
    row = await h.pool.fetchrow("SELECT * FROM mta_sts_policies")
    assert (row["domain"], row["policy_id"], row["mode"], row["mx"], row["max_age"]) == (
        "sts.test",
        "1",
        "enforce",
        ["mx.sts.test"],
        86400,
    )
    await h.queue(["b@sts.test"])
    await h.run()
    assert len(sink.transactions) == 2
    assert len(sts.fetches) == 1


async def test_enforce_refuses_an_unverified_certificate_and_bounces_with_the_reason(
    h: Harness, sts: PolicyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Enforce, and the MX's certificate is self-signed: no MAIL is sent, the mail waits with the reason, and when
    it expires the DSN says MTA-STS was why."""
    caplog.set_level(logging.INFO, logger="relate")
    sink = await mx(h, sts, "127.0.0.2", "mx.sts.test", trusted=False)
    eid = await h.queue(["a@sts.test"])
    await h.run()
    rcpt = (await h.recipients(eid))["a@sts.test"]
    assert rcpt["status"] == "deferred"
    assert "MTA-STS: TLS to mx.sts.test not verified" in rcpt["last_error"]
    assert sink.mail_commands == 0
    assert any("delivery-mta-sts-refused domain=sts.test host=mx.sts.test" in r.getMessage() for r in caplog.records)
    await h.worker.send_tls_reports()  # the TLS-RPT tally, into the database
    row = await h.pool.fetchrow("SELECT mx_host, result_type, sessions FROM tls_results")
    assert dict(row) == {"mx_host": "mx.sts.test", "result_type": "certificate-not-trusted", "sessions": 1}
    h.clock.advance(5 * 24 * 3600 + 1)
    await h.run()
    assert (await h.recipients(eid))["a@sts.test"]["status"] == "failed"
    (dsn,) = await h.dsns(ALICE)
    assert "MTA-STS" in str(dsn.recipient("a@sts.test"))
    assert sink.mail_commands == 0


async def test_enforce_never_uses_an_mx_host_the_policy_does_not_list(h: Harness, sts: PolicyServer) -> None:
    """The policy lists mx.sts.test but the MX record names rogue.sts.test: no connection, deferred 4.7.5 saying so."""
    sink = await mx(h, sts, "127.0.0.2", "rogue.sts.test", trusted=True)
    eid = await h.queue(["a@sts.test"])
    await h.run()
    rcpt = (await h.recipients(eid))["a@sts.test"]
    assert (rcpt["status"], rcpt["status_code"]) == ("deferred", "4.7.5")
    assert "lists none of its MX hosts (rogue.sts.test)" in rcpt["last_error"]
    assert sink.connections == 0


async def test_testing_mode_delivers_and_logs_what_enforce_would_refuse(
    h: Harness, sts: PolicyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """mode: testing with a self-signed MX certificate: the mail goes (opportunistic TLS) and the log says enforce
    would have refused it."""
    caplog.set_level(logging.INFO, logger="relate")
    sts.body = POLICY.format(mode="testing", mx="mx.sts.test")
    sink = await mx(h, sts, "127.0.0.2", "mx.sts.test", trusted=False)
    eid = await h.queue(["a@sts.test"])
    await h.run()
    assert (await h.recipients(eid))["a@sts.test"]["status"] == "sent"
    assert [t.tls for t in sink.transactions] == [True]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("delivery-mta-sts-testing")]
    assert len(lines) == 1
    assert "domain=sts.test host=mx.sts.test: enforce would refuse it" in lines[0]


async def test_a_new_id_refetches_and_a_failed_fetch_keeps_the_cached_policy(
    h: Harness, sts: PolicyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A new TXT id makes a fetch; when that fetch fails (404) the cached enforce policy still applies and the fetch
    is not repeated at once; with no TXT record at all the cached policy applies until it expires, then mail goes as
    without a policy."""
    caplog.set_level(logging.INFO, logger="relate")
    sink = await mx(h, sts, "127.0.0.2", "mx.sts.test", trusted=False)
    sts.body = POLICY.format(mode="enforce", mx="mx.sts.test")
    eid = await h.queue(["a@sts.test"])
    await h.run()
    assert (await h.recipients(eid))["a@sts.test"]["status"] == "deferred"
    h.net.zone.records[("_mta-sts.sts.test", "TXT")] = ['"v=STSv1; id=2"']
    sts.status = 404
    h.clock.advance(3600)
    forget_dns(h)
    await h.run()
    assert len(sts.fetches) == 2
    assert any("delivery-mta-sts-fetch-failed domain=sts.test id=2" in r.getMessage() for r in caplog.records)
    assert (await h.recipients(eid))["a@sts.test"]["status"] == "deferred"
    await h.queue(["b@sts.test"])
    await h.run()
    assert len(sts.fetches) == 2  # a failed fetch is not tried again at once
    assert sink.mail_commands == 0
    del h.net.zone.records[("_mta-sts.sts.test", "TXT")]
    h.clock.advance(3600)
    forget_dns(h)
    await h.run()
    assert (await h.recipients(eid))["a@sts.test"]["status"] == "deferred"  # cached, unexpired: still enforced
    h.clock.advance(86400)
    await h.run()
    assert (await h.recipients(eid))["a@sts.test"]["status"] == "sent"  # expired, no record: no policy
    assert len(sts.fetches) == 2


async def test_cached_policies_are_refreshed_before_they_expire(
    h: Harness, sts: PolicyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 8461 §10.2: a cached policy (max_age one day) of a domain still mailed is fetched again at half its
    life though its id did not change, and lives on from then; a failed refresh keeps it as it was; a domain not
    mailed since the last fetch is left alone."""
    caplog.set_level(logging.INFO, logger="relate")
    await mx(h, sts, "127.0.0.2", "mx.sts.test", trusted=True)
    await h.queue(["a@sts.test"])
    await h.run()
    assert await h.worker.refresh_mta_sts() == 0  # just fetched
    first = await h.pool.fetchrow("SELECT * FROM mta_sts_policies")
    h.clock.advance(12 * 3600 + 1)
    assert await h.worker.refresh_mta_sts() == 0  # due, but no mail to sts.test since the fetch
    await h.queue(["b@sts.test"])
    await h.run()
    assert len(sts.fetches) == 1  # the cached policy served b@ (same id)
    sts.body = POLICY.format(mode="testing", mx="mx.sts.test")
    assert await h.worker.refresh_mta_sts() == 1
    assert len(sts.fetches) == 2
    row = await h.pool.fetchrow("SELECT * FROM mta_sts_policies")
    assert (row["policy_id"], row["mode"]) == ("1", "testing")
    assert row["expires_at"] - first["expires_at"] == timedelta(seconds=12 * 3600 + 1)
    assert any("delivery-mta-sts-refreshed domain=sts.test id=1 mode=testing" in r.getMessage() for r in caplog.records)
    assert await h.worker.refresh_mta_sts() == 0  # just refreshed
    h.clock.advance(12 * 3600 + 1)
    await h.queue(["c@sts.test"])
    await h.run()
    sts.status = 404
    assert await h.worker.refresh_mta_sts() == 0
    assert len(sts.fetches) == 3
    assert dict(await h.pool.fetchrow("SELECT * FROM mta_sts_policies")) == dict(row)
    assert any("delivery-mta-sts-refresh-failed domain=sts.test" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        (200, "text/html", POLICY.format(mode="enforce", mx="mx.sts.test")),
        (200, "text/plain", "version: STSv1\r\nmode: enforce\r\nmax_age: 86400\r\n"),  # no mx
        (200, "text/plain", "x" * (64 * 1024 + 1)),
        (301, "text/plain", ""),
    ],
)
async def test_a_bad_policy_is_no_policy(
    h: Harness, sts: PolicyServer, status: int, content_type: str, body: str
) -> None:
    """A policy that is not text/plain, has no mx, is over 64 KiB, or is a redirect is not used: mail goes as
    without a policy (to a host with a self-signed certificate)."""
    sts.status, sts.content_type, sts.body = status, content_type, body
    sink = await mx(h, sts, "127.0.0.2", "mx.sts.test", trusted=False)
    eid = await h.queue(["a@sts.test"])
    await h.run()
    assert (await h.recipients(eid))["a@sts.test"]["status"] == "sent"
    assert len(sink.transactions) == 1
    assert await h.pool.fetchval("SELECT count(*) FROM mta_sts_policies") == 0


# --- TLS-RPT (RFC 8460) ---------------------------------------------------------------


def tls_report(raw: bytes) -> tuple[email.message.Message, dict[str, Any]]:
    """The report mail and its JSON report, checked for the shape of RFC 8460 §5.3."""
    msg = email.message_from_bytes(raw)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "tlsrpt"
    parts = msg.get_payload()
    assert isinstance(parts, list)
    (attachment,) = [p for p in parts if p.get_content_type() == "application/tlsrpt+gzip"]
    assert attachment.get_filename().endswith(".json.gz")
    return msg, json.loads(gzip.decompress(attachment.get_payload(decode=True)))


async def test_tls_report_of_the_day_goes_to_the_rua_the_next_day(h: Harness, sts: PolicyServer) -> None:
    """A day's verified and refused (host mismatch) sessions under sts.test's policy reach its rua= the next day as
    a gzipped JSON report in a multipart/report mail; once sent, the results are gone and no second report follows."""
    sts.body = "version: STSv1\r\nmode: enforce\r\nmx: mx1.sts.test\r\nmx: mx2.sts.test\r\nmax_age: 86400\r\n"
    # Both hosts present mx2's certificate (Net hands each connection the context of the moment): trusted, but
    # not for mx1's name.
    h.net.tls = server_context(*sts.ca.issue("mx2.sts.test"))
    bad = await h.net.mta("127.0.0.2", starttls=True)
    good = await h.net.mta("127.0.0.3", starttls=True)
    h.net.mx("sts.test", (10, "mx1.sts.test", "127.0.0.2"), (20, "mx2.sts.test", "127.0.0.3"))
    reports = await h.net.mta("127.0.0.4")
    h.net.mx("reports.test", (10, "mx.reports.test", "127.0.0.4"))
    h.net.zone.add("_smtp._tls.sts.test", "TXT", '"v=TLSRPTv1; rua=mailto:tlsrpt@reports.test,https://r.example/x"')
    eid = await h.queue(["a@sts.test"])
    await h.run()
    assert (await h.recipients(eid))["a@sts.test"]["remote_mta"] == "mx2.sts.test"
    assert (bad.mail_commands, len(good.transactions)) == (0, 1)
    assert await h.worker.send_tls_reports() == 0  # the day is not over
    h.clock.advance(24 * 3600)
    assert await h.worker.send_tls_reports() == 1
    await h.run()
    (sent,) = reports.transactions
    assert sent.rcpt_tos == ["tlsrpt@reports.test"]
    msg, report = tls_report(sent.data)
    assert msg["TLS-Report-Domain"] == "sts.test"
    assert msg["TLS-Report-Submitter"] == "mail.example.com"
    subject = " ".join(msg["Subject"].split())  # unfolded
    assert subject == f"Report Domain: sts.test Submitter: mail.example.com Report-ID: <{report['report-id']}>"
    assert report["organization-name"] == "mail.example.com"
    assert report["contact-info"] == "postmaster@example.com"
    assert report["date-range"]["start-datetime"].endswith("T00:00:00Z")
    assert report["policies"] == [
        {
            "policy": {
                "policy-type": "sts",
                "policy-domain": "sts.test",
                "policy-string": [
                    "version: STSv1",
                    "mode: enforce",
                    "mx: mx1.sts.test",
                    "mx: mx2.sts.test",
                    "max_age: 86400",
                ],
                "mx-host": ["mx1.sts.test", "mx2.sts.test"],
            },
            "summary": {"total-successful-session-count": 1, "total-failure-session-count": 1},
            "failure-details": [
                {
                    "result-type": "certificate-host-mismatch",
                    "receiving-mx-hostname": "mx1.sts.test",
                    "failed-session-count": 1,
                }
            ],
        }
    ]
    h.clock.advance(24 * 3600)
    assert await h.worker.send_tls_reports() == 0
    assert await h.pool.fetchval("SELECT count(*) FROM tls_results") == 0


async def test_no_tls_report_without_a_tlsrpt_record(h: Harness, sts: PolicyServer) -> None:
    """A domain that publishes no _smtp._tls record gets no report; its results are dropped once the day is over."""
    await mx(h, sts, "127.0.0.2", "mx.sts.test", trusted=True)
    await h.queue(["a@sts.test"])
    await h.run()
    await h.worker.send_tls_reports()
    row = await h.pool.fetchrow("SELECT policy_type, mx_host, result_type, sessions FROM tls_results")
    assert dict(row) == {"policy_type": "sts", "mx_host": "", "result_type": "", "sessions": 1}
    h.clock.advance(24 * 3600)
    assert await h.worker.send_tls_reports() == 0
    assert await h.pool.fetchval("SELECT count(*) FROM tls_results") == 0
    assert await h.pool.fetchval("SELECT count(*) FROM outbound_emails") == 1  # the message alone
