"""TLS-RPT (RFC 8460): tallying the TLS results of our deliveries and sending each domain its daily report.

Policy:

- What is counted (§4.3): each SMTP connection to a recipient domain's MX
  host that negotiated TLS is a successful session; under an MTA-STS policy
  (policy type ``sts``) only one verified for the MX name counts, and an MX
  host refused by the policy is a failed session with its result type:
  ``starttls-not-supported``, ``certificate-host-mismatch``,
  ``certificate-expired``, ``certificate-not-trusted``, or
  ``validation-failure`` (any other verification failure, and an MX host the
  policy does not list). Without a policy (``no-policy-found``) only TLS
  sessions are counted, as successes; a host without STARTTLS is not a TLS
  failure there. Mail through the smarthost is not counted.
- Cost: each delivery daemon tallies in memory and adds its counts to
  PostgreSQL (``tls_results``) once a second at most, one upsert per domain
  and result kind, never a statement per connection. A daemon killed loses
  at most its last second's tally: reports are statistics, not mail.
- Reports (§5.3): once a UTC day is over, each domain with results gets one
  report for it, when its ``_smtp._tls`` TXT record (one ``v=TLSRPTv1``
  record) names ``mailto:`` addresses: a ``multipart/report;
  report-type="tlsrpt"`` message with the JSON report (§4.4) gzipped as
  ``application/tlsrpt+gzip``, queued like any outbound mail (so DKIM-signed
  and retried) from ``postmaster@`` the first hosted domain, on behalf of
  its first user. ``https:`` addresses are not posted to. A domain without
  such a record gets nothing, and its results are dropped. The results are
  taken in the transaction that queues the report, rows locked with SKIP
  LOCKED, so several daemons send each report once.
"""

from __future__ import annotations

import collections
import email.policy
import email.utils
import gzip
import json
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage
from typing import Any

import asyncpg

from relate.mail.compose import make_message_id
from relate.mailauth.dns import Dns, TempError
from relate.store import accounts, messages, outbound
from relate.store import tlsrpt as store
from relate.store.tlsrpt import Tally

log = logging.getLogger("relate.delivery")

STS = "sts"
NO_POLICY = "no-policy-found"
STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
HOST_MISMATCH = "certificate-host-mismatch"
EXPIRED = "certificate-expired"
NOT_TRUSTED = "certificate-not-trusted"
VALIDATION_FAILURE = "validation-failure"

# OpenSSL's X509_V_ERR_* codes, as ssl.SSLCertVerificationError.verify_code gives them.
_VERIFY_CODES = {
    10: EXPIRED,  # certificate has expired
    18: NOT_TRUSTED,  # self-signed certificate
    19: NOT_TRUSTED,  # self-signed certificate in chain
    20: NOT_TRUSTED,  # unable to get local issuer certificate
    21: NOT_TRUSTED,  # unable to verify the first certificate
    62: HOST_MISMATCH,  # hostname mismatch
}
# Domains (and days) whose reports one pass of report-making looks at.
REPORT_BATCH = 50


def result_type(exc: BaseException) -> str:
    """The RFC 8460 §4.3.2.1 result type of a failed verification."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY_CODES.get(exc.verify_code, VALIDATION_FAILURE)
    return VALIDATION_FAILURE


class TlsTally:
    """One daemon's TLS results not yet added to the database (see the module docstring)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self._counts: collections.Counter[Tally] = collections.Counter()

    def _key(self, domain: str, policy: str | None, mx_host: str = "", kind: str = "") -> Tally:
        day = self.clock().astimezone(UTC).date()
        return Tally(domain.lower(), day, NO_POLICY if policy is None else STS, mx_host, kind, policy or "")

    def success(self, domain: str, policy: str | None) -> None:
        """A TLS session to an MX host of ``domain``; ``policy``: the MTA-STS policy text it was verified by."""
        self._counts[self._key(domain, policy)] += 1

    def failure(self, domain: str, policy: str, mx_host: str, kind: str) -> None:
        """A session an MTA-STS policy refused: the MX host and the result type."""
        self._counts[self._key(domain, policy, mx_host.lower(), kind)] += 1

    async def flush(self, pool: asyncpg.Pool) -> None:
        """Add the tally to the database; on failure it is kept for the next try."""
        if not self._counts:
            return
        counts, self._counts = self._counts, collections.Counter()
        try:
            async with pool.acquire() as conn:
                await store.add(conn, list(counts.items()))
        except BaseException:
            self._counts.update(counts)
            raise


@dataclass(frozen=True)
class Reporter:
    """Who the reports come from: this host, and a hosted domain's postmaster (with the user who sends)."""

    hostname: str
    domain: str
    user_id: int

    @property
    def address(self) -> str:
        return f"postmaster@{self.domain}"


def report_json(reporter: Reporter, domain: str, day: date, results: Sequence[tuple[Tally, int]]) -> dict[str, Any]:
    """The JSON report of RFC 8460 §4.4 for one policy domain and one UTC day."""
    start = datetime.combine(day, time(0), UTC)
    end = start + timedelta(days=1) - timedelta(seconds=1)
    by_policy: dict[tuple[str, str], list[tuple[Tally, int]]] = collections.defaultdict(list)
    for tally, count in results:
        by_policy[(tally.policy_type, tally.policy if tally.policy_type == STS else "")].append((tally, count))
    policies = []
    for (policy_type, policy_text), rows in sorted(by_policy.items()):
        policy: dict[str, Any] = {"policy-type": policy_type, "policy-domain": domain}
        if policy_type == STS:
            lines = policy_text.splitlines()
            policy["policy-string"] = lines
            policy["mx-host"] = [line.partition(":")[2].strip() for line in lines if line.startswith("mx:")]
        failures = sorted((t for t in rows if t[0].result_type), key=lambda t: (t[0].mx_host, t[0].result_type))
        policies.append(
            {
                "policy": policy,
                "summary": {
                    "total-successful-session-count": sum(n for t, n in rows if not t.result_type),
                    "total-failure-session-count": sum(n for _, n in failures),
                },
                "failure-details": [
                    {"result-type": t.result_type, "receiving-mx-hostname": t.mx_host, "failed-session-count": n}
                    for t, n in failures
                ],
            }
        )
    return {
        "organization-name": reporter.hostname,
        "date-range": {"start-datetime": _stamp(start), "end-datetime": _stamp(end)},
        "contact-info": reporter.address,
        "report-id": f"{day:%Y%m%d}.{domain}@{reporter.hostname}",
        "policies": policies,
    }


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def report_message(reporter: Reporter, domain: str, report: dict[str, Any], to: Sequence[str]) -> tuple[bytes, str]:
    """The report mail of RFC 8460 §5.3 (multipart/report, report-type tlsrpt, JSON gzipped): bytes, Message-ID."""
    message_id = make_message_id(reporter.domain)
    msg = EmailMessage()
    msg["From"] = reporter.address
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"Report Domain: {domain} Submitter: {reporter.hostname} Report-ID: <{report['report-id']}>"
    msg["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id
    msg["TLS-Report-Domain"] = domain
    msg["TLS-Report-Submitter"] = reporter.hostname
    msg.set_content(
        f"This is the TLS report (RFC 8460) of {reporter.hostname} for {domain}, "
        f"{report['date-range']['start-datetime']} to {report['date-range']['end-datetime']}.\n"
    )
    start = int(
        datetime.strptime(report["date-range"]["start-datetime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    )
    filename = f"{reporter.hostname}!{domain}!{start}!{start + 86399}!{report['report-id'].split('@')[0]}.json.gz"
    body = gzip.compress(json.dumps(report, separators=(",", ":")).encode(), mtime=0)
    msg.add_attachment(body, maintype="application", subtype="tlsrpt+gzip", filename=filename)
    msg.set_type("multipart/report")
    msg.set_param("report-type", "tlsrpt")
    return msg.as_bytes(policy=email.policy.SMTP), message_id


def rua_addresses(records: Sequence[str]) -> list[str]:
    """The mailto: addresses of a domain's one ``v=TLSRPTv1`` record (§3); [] for none, several, or no mailto."""
    found = [r for r in records if r.startswith("v=TLSRPTv1")]
    if len(found) != 1:
        return []
    for part in found[0].split(";")[1:]:
        name, eq, value = part.strip().partition("=")
        if eq and name.strip() == "rua":
            uris = [u.strip() for u in value.split(",")]
            return [u[len("mailto:") :].split("?")[0] for u in uris if u.startswith("mailto:") and "@" in u]
    return []


async def send_reports(pool: asyncpg.Pool, dns: Dns, hostname: str, now: datetime) -> int:
    """Queue the reports of every UTC day before ``now``'s with results (see the module docstring); how many."""
    today = now.astimezone(UTC).date()
    async with pool.acquire() as conn:
        pending = await store.due(conn, today, REPORT_BATCH)
        target = await accounts.postmaster_target(conn, None) if pending else None
    if not pending:
        return 0
    queued = 0
    for domain, day in pending:
        try:
            to = rua_addresses(await dns.txt(f"_smtp._tls.{domain}") or [])
        except TempError:
            continue  # asked again at the next turn
        async with pool.acquire() as conn, conn.transaction():
            results = await store.take(conn, domain, day)
            if not results or not to:
                continue
            if target is None:
                log.warning("tlsrpt-skipped domain=%s day=%s: no hosted user to send it as", domain, day)
                continue
            reporter = Reporter(hostname, target["domain"], target["user_id"])
            report = report_json(reporter, domain, day, results)
            raw, message_id = report_message(reporter, domain, report, to)
            blob = await messages.put_blob(conn, raw)
            await outbound.queue_message(
                conn,
                user_id=reporter.user_id,
                from_address=reporter.address,
                mail_from=reporter.address,
                subject=f"TLS report for {domain}",
                message_id=message_id,
                blob_hash=blob,
                recipients=to,
            )
        queued += 1
        log.info("tlsrpt-queued domain=%s day=%s to=%s", domain, day, ",".join(to))
    return queued
