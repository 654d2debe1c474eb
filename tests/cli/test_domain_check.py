"""relatectl domain check: live DNS (a loopback DNS server) against what this host needs, each problem with its fix."""

from __future__ import annotations

import asyncio
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relate.config import DatabaseConfig
from relate.mail.dkim import generate
from relate.services import accounts
from relate.services import dns as dns_service
from relate.store import db
from relate.testing.ca import TestCa
from relate.testing.dns import ThreadedDnsServer, Zone
from tests.cli.test_relatectl import Invoke, as_json, invoke, ok

HOST = "mail.example.com"
IP = "192.0.2.10"
PTR_NAME = "10.2.0.192.in-addr.arpa"


@pytest.fixture
def dns_server() -> Iterator[ThreadedDnsServer]:
    server = ThreadedDnsServer(Zone())
    server.start()
    yield server
    server.stop()


class PolicyHandler(http.server.BaseHTTPRequestHandler):
    policy = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmax_age: 86400\r\n"

    def do_GET(self) -> None:
        body = self.policy.encode()
        self.send_response(200 if self.path == "/.well-known/mta-sts.txt" else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    """A throwaway CA: it signs the MX and policy certificates, and relatectl trusts it (delivery.tls_ca_file)."""
    return TestCa(tmp_path)


@pytest.fixture
def policy_server(ca: TestCa) -> Iterator[tuple[int, type[PolicyHandler]]]:
    """https://mta-sts.example.com in a thread, with a test-CA certificate: (port, the handler class serving it)."""
    handler = type("Handler", (PolicyHandler,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*ca.issue("mta-sts.example.com"))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def dkim_record(dsn: str) -> str:
    """example.com hosted, with a user and an RSA DKIM key; the key's TXT record value (as quoted strings)."""

    async def go() -> str:
        pool = await db.create_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=2))
        try:
            await accounts.add_domain(pool, "example.com")
            await accounts.add_user(pool, "alice@example.com")
            key, _ = await dns_service.dkim_keygen(pool, "example.com", selector="relate1")
            return dns_service.txt_strings(key.txt_record())
        finally:
            await pool.close()

    return asyncio.run(go())


@pytest.fixture
def relatectl(dsn: str) -> Invoke:
    """``relatectl(*args, **env)`` against the test's database."""
    return lambda *args, input=None, **env: invoke(dsn, *args, input=input, **env)


@pytest.fixture
def check(
    relatectl: Invoke, dns_server: ThreadedDnsServer, ca: TestCa, policy_server: tuple[int, type[PolicyHandler]]
) -> Any:
    """``check(*args, cert_names=...)``: relatectl domain check example.com against the loopback DNS server, the
    policy server trusted through delivery.tls_ca_file."""

    def run(*args: str, cert_names: tuple[str, ...] = (HOST,)) -> Any:
        cert, key = ca.issue(*cert_names)
        return relatectl(
            "domain",
            "check",
            "example.com",
            *args,
            RELATE_HOSTNAME=HOST,
            RELATE_DELIVERY__DNS_SERVERS=dns_server.address,
            RELATE_DELIVERY__DNS_TIMEOUT="2",
            RELATE_TLS__CERT=str(cert),
            RELATE_TLS__KEY=str(key),
            RELATE_DELIVERY__TLS_CA_FILE=str(ca.cert_path),
            RELATE_DELIVERY__MTA_STS_PORT=str(policy_server[0]),
        )

    return run


def report_of(result: Any) -> Any:
    """The JSON report of a check, whatever its exit code."""
    assert result.exit_code in (0, 1), (result.exit_code, result.stdout, result.stderr, result.exception)
    return json.loads(result.stdout)


def publish_good(zone: Zone, dkim_record: str) -> None:
    zone.add("example.com", "MX", f"10 {HOST}.")
    zone.add(HOST, "A", IP)
    zone.add(PTR_NAME, "PTR", f"{HOST}.")
    zone.add("example.com", "TXT", '"v=spf1 mx -all"')
    zone.add("relate1._domainkey.example.com", "TXT", dkim_record)
    zone.add("_dmarc.example.com", "TXT", '"v=DMARC1; p=quarantine"')
    zone.add("_mta-sts.example.com", "TXT", '"v=STSv1; id=20261207T1500"')
    zone.add("mta-sts.example.com", "A", "127.0.0.1")
    zone.add("_smtp._tls.example.com", "TXT", '"v=TLSRPTv1; rua=mailto:tlsrpt@example.com"')


def test_a_domain_set_up_right_passes_every_check(check: Any, dns_server: ThreadedDnsServer, dkim_record: str) -> None:
    """Every record right (and a CA-signed certificate for the MX name): every check ok, exit 0, nothing to fix."""
    publish_good(dns_server.zone, dkim_record)
    result = ok(check())
    assert "nothing to fix" in result.stdout
    report = as_json(check("--json"))
    assert report["addresses"] == [IP]
    assert {c["check"]: c["state"] for c in report["checks"]} == {
        "MX": "ok",
        "SPF": "ok",
        "DKIM": "ok",
        "DMARC": "ok",
        "reverse DNS": "ok",
        "certificate": "ok",
        "MTA-STS": "ok",
        "TLS-RPT": "ok",
    }
    assert report["fix_first"] == []


def test_one_wrong_record_of_each_kind_names_each_problem_and_its_fix(
    check: Any, dns_server: ThreadedDnsServer, dkim_record: str
) -> None:
    """MX elsewhere, SPF without us, another DKIM key, no DMARC, PTR to another name, a certificate for another
    name, an MTA-STS record without id, a TLS-RPT rua that is no URI: exit 1, each named with the record to publish."""
    zone = dns_server.zone
    zone.add("example.com", "MX", "10 mx.elsewhere.example.")
    zone.add("mx.elsewhere.example", "A", "198.51.100.7")
    zone.add(HOST, "A", IP)
    zone.add(PTR_NAME, "PTR", "host-10.provider.example.")
    zone.add("example.com", "TXT", '"v=spf1 ip4:198.51.100.7 -all"')
    other = generate("relate1").txt_record()
    zone.add("relate1._domainkey.example.com", "TXT", dns_service.txt_strings(other))
    zone.add("_mta-sts.example.com", "TXT", '"v=STSv1;"')
    zone.add("_smtp._tls.example.com", "TXT", '"v=TLSRPTv1; rua=tlsrpt@example.com"')
    result = check(cert_names=("other.example.net",))
    assert result.exit_code == 1, result.stdout
    out = result.stdout
    fixes = [
        "example.com. 3600 IN MX 10 mail.example.com.",
        'example.com. 3600 IN TXT "v=spf1 ip4:192.0.2.10 ip4:198.51.100.7 -all"',
        f"relate1._domainkey.example.com. 3600 IN TXT {dkim_record}",
        '_dmarc.example.com. 3600 IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com"',
        "10.2.0.192.in-addr.arpa. IN PTR mail.example.com.",
        '_mta-sts.example.com. 3600 IN TXT "v=STSv1; id=',
        '_smtp._tls.example.com. 3600 IN TXT "v=TLSRPTv1; rua=mailto:postmaster@example.com"',
        "a certificate for mail.example.com",
    ]
    for fix in fixes:
        assert fix in out, (fix, out)
    # What to fix first: inbound mail (MX), then what receivers check, in that order.
    assert out.index("1. MX") < out.index("2. SPF") < out.index("3. DKIM") < out.index("4. DMARC")
    report = report_of(check("--json", cert_names=("other.example.net",)))
    states = {c["check"]: (c["state"], c["problem"]) for c in report["checks"]}
    assert states["MX"] == ("fail", "the MX records point at mx.elsewhere.example, not at mail.example.com")
    assert states["SPF"][0] == "fail"
    assert "192.0.2.10" in states["SPF"][1]
    assert states["DKIM"] == (
        "fail",
        "relate1._domainkey.example.com publishes another key than the one mail is signed with",
    )
    assert states["DMARC"] == ("fail", "no DMARC record at _dmarc.example.com")
    assert states["reverse DNS"] == (
        "fail",
        "192.0.2.10 resolves back to host-10.provider.example, not to the HELO name mail.example.com",
    )
    assert states["certificate"][0] == "fail"
    assert "does not cover mail.example.com" in states["certificate"][1]
    assert states["MTA-STS"] == ("fail", "the _mta-sts.example.com record has no valid id=")
    assert states["TLS-RPT"] == ("fail", "the rua= of _smtp._tls.example.com is not a mailto: or https: URI")
    assert report["fix_first"] == ["MX", "SPF", "DKIM", "DMARC", "reverse DNS", "certificate", "MTA-STS", "TLS-RPT"]


def test_missing_optional_records_warn_and_exit_0(check: Any, dns_server: ThreadedDnsServer, dkim_record: str) -> None:
    """No MTA-STS or TLS-RPT record and DMARC p=none are warnings (exit 0); a missing SPF record is a failure."""
    zone = dns_server.zone
    zone.add("example.com", "MX", f"10 {HOST}.")
    zone.add(HOST, "A", IP)
    zone.add(PTR_NAME, "PTR", f"{HOST}.")
    zone.add("relate1._domainkey.example.com", "TXT", dkim_record)
    zone.add("_dmarc.example.com", "TXT", '"v=DMARC1; p=none"')
    zone.add("example.com", "TXT", '"v=spf1 mx -all"')
    report = as_json(check("--json"))
    states = {c["check"]: c["state"] for c in report["checks"]}
    assert states == {
        "MX": "ok",
        "SPF": "ok",
        "DKIM": "ok",
        "DMARC": "warn",
        "reverse DNS": "ok",
        "certificate": "ok",
        "MTA-STS": "warn",
        "TLS-RPT": "warn",
    }
    assert ok(check()).exit_code == 0


def test_no_dkim_key_and_dns_trouble_say_what_to_run(
    relatectl: Invoke, check: Any, dns_server: ThreadedDnsServer, dsn: str
) -> None:
    """A domain without a DKIM key is told to run `relatectl dkim keygen`; a SERVFAIL is a failure naming DNS."""
    ok(relatectl("domain", "add", "example.com"))
    dns_server.zone.fail.add("example.com")
    report = report_of(check("--json"))
    states = {c["check"]: c for c in report["checks"]}
    assert states["DKIM"]["state"] == "fail"
    assert "relatectl dkim keygen example.com" in states["DKIM"]["fix"]
    assert states["MX"]["state"] == "fail"
    assert "DNS did not answer" in states["MX"]["problem"]
    assert check().exit_code == 1


def test_an_mta_sts_policy_that_misses_our_mx_or_cannot_be_fetched_fails(
    check: Any, dns_server: ThreadedDnsServer, dkim_record: str, policy_server: tuple[int, type[PolicyHandler]]
) -> None:
    """The policy is fetched as senders fetch it: one whose mx lines miss this host fails (fix: mta_sts.mx), one in
    testing mode warns, and one that cannot be fetched (no address for mta-sts.example.com) fails, saying why."""
    publish_good(dns_server.zone, dkim_record)
    _, handler = policy_server
    handler.policy = "version: STSv1\r\nmode: enforce\r\nmx: mx.elsewhere.example\r\nmax_age: 86400\r\n"
    states = {c["check"]: c for c in report_of(check("--json"))["checks"]}
    assert states["MTA-STS"]["state"] == "fail"
    assert states["MTA-STS"]["problem"].startswith("the policy's mx lines do not cover mail.example.com")
    assert states["MTA-STS"]["fix"] == "mta_sts.mx in relate.yaml to include mail.example.com"
    handler.policy = "version: STSv1\r\nmode: testing\r\nmx: *.example.com\r\nmax_age: 86400\r\n"
    states = {c["check"]: c for c in report_of(check("--json"))["checks"]}
    assert (states["MTA-STS"]["state"], states["MTA-STS"]["problem"]) == (
        "warn",
        "mode testing: senders do not insist on TLS yet",
    )
    del dns_server.zone.records[("mta-sts.example.com", "A")]
    states = {c["check"]: c for c in report_of(check("--json"))["checks"]}
    assert states["MTA-STS"]["state"] == "fail"
    assert states["MTA-STS"]["problem"].startswith("the policy cannot be fetched: https://mta-sts.example.com:")


def test_a_new_dkim_key_not_yet_published_warns_with_its_record(
    check: Any, relatectl: Invoke, dns_server: ThreadedDnsServer, dkim_record: str
) -> None:
    """After `dkim keygen` while a key signs, the new (pending) key's missing record is a warning giving the record
    to publish; once it is published, DKIM is ok again."""
    publish_good(dns_server.zone, dkim_record)
    made = ok(relatectl("dkim", "keygen", "example.com", "--json"))
    new = json.loads(made.stdout)
    selector = new["name"].split(".")[0]
    dkim = {c["check"]: c for c in as_json(check("--json"))["checks"]}["DKIM"]
    assert dkim["state"] == "warn"
    assert selector in dkim["problem"]
    assert dkim["fix"].startswith(f"{selector}._domainkey.example.com")
    assert check().exit_code == 0  # a warning: the current key still signs
    dns_server.zone.add(new["name"], "TXT", dns_service.txt_strings(new["value"]))
    assert {c["check"]: c["state"] for c in as_json(check("--json"))["checks"]}["DKIM"] == "ok"
