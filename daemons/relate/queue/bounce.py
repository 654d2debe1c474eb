"""Delivery status notifications (RFC 3464) to the sender of a message we could not deliver.

Policy: a recipient that finally fails (a 5xx reply, a permanent DNS
failure, or still undelivered when the message reaches the queue's maximum
age) produces one DSN, ``Action: failed``; a message still waiting after
``delivery.delay_warning`` produces one ``Action: delayed`` warning. Both go
straight into the sender's INBOX through the ingest path. Never a DSN for a
message with the null sender: that would be a bounce of a bounce.
"""

from __future__ import annotations

import email.utils
import secrets
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class RecipientStatus:
    address: str
    enhanced: str  # 5.1.1, 4.4.7, ...
    diagnostic: str  # the remote reply or our own explanation
    remote_mta: str | None = None


def _original_headers(original: bytes) -> bytes:
    """The header of ``original`` (perhaps only the start of the message): up to the blank line, else whole lines."""
    cut = original.find(b"\r\n\r\n")
    if cut >= 0:
        return original[: cut + 2]
    return original[: original.rfind(b"\r\n") + 2] if b"\r\n" in original else b""


def build(
    *,
    reporting_mta: str,
    sender: str,
    original: bytes,
    arrival: datetime,
    recipients: list[RecipientStatus],
    action: str,
    now: datetime,
) -> bytes:
    """The DSN message: multipart/report with a human part, delivery-status and the original headers."""
    boundary = f"=_relate_dsn_{secrets.token_hex(8)}"
    delayed = action == "delayed"
    subject = "Delivery delayed" if delayed else "Undelivered mail returned to sender"
    lines = [
        "This is the mail system at host " + reporting_mta + ".",
        "",
        (
            "Your message could not be delivered yet to the recipients below. It will be retried;"
            " you do not need to resend it."
            if delayed
            else "Your message could not be delivered to the recipients below. It will not be retried."
        ),
        "",
    ]
    for r in recipients:
        lines.append(f"<{r.address}>: {r.diagnostic}")
    human = "\r\n".join(lines) + "\r\n"
    status = [
        f"Reporting-MTA: dns; {reporting_mta}",
        f"Arrival-Date: {email.utils.format_datetime(arrival)}",
        "",
    ]
    for r in recipients:
        status += [
            f"Final-Recipient: rfc822; {r.address}",
            f"Action: {action}",
            f"Status: {r.enhanced}",
        ]
        if r.remote_mta:
            status.append(f"Remote-MTA: dns; {r.remote_mta}")
        diagnostic = " ".join(r.diagnostic.split())
        status.append(f"Diagnostic-Code: smtp; {diagnostic}" if r.remote_mta else f"X-Relate-Diagnostic: {diagnostic}")
        status.append(f"Last-Attempt-Date: {email.utils.format_datetime(now)}")
        status.append("")
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {email.utils.format_datetime(now)}",
        f"Message-Id: <{secrets.token_hex(12)}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
    ]
    out = "\r\n".join(head).encode() + b"\r\n" + human.encode()
    out += f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n".encode()
    out += "\r\n".join(status).encode("utf-8", "replace") + b"\r\n"
    out += f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n".encode()
    out += _original_headers(original)
    out += f"\r\n--{boundary}--\r\n".encode()
    return out
