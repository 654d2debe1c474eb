"""Compose RFC 5322 messages from what a user wrote: headers, bodies, attachments (stdlib ``email``).

Policy:

- Structure (RFC 2046): a text body alone is ``text/plain``, an HTML body
  alone ``text/html``, both are ``multipart/alternative`` (text first, so
  the richest part comes last, §5.1.4). Inline parts with a Content-ID wrap
  the HTML in ``multipart/related`` (RFC 2387); other attachments wrap the
  whole in ``multipart/mixed``. Text parts are UTF-8; the ``email`` package
  picks 7bit, quoted-printable or base64 per part, so no line is over 998
  octets (RFC 5322 §2.1.1).
- Headers: non-ASCII display names and subjects become RFC 2047 encoded
  words. An address with a non-ASCII local part cannot be written that way,
  so such a message is composed with raw UTF-8 headers (RFC 6532), which
  the delivery daemon sends only to servers offering SMTPUTF8.
- ``Bcc`` is written only into copies that stay with the sender (the Sent
  and Drafts copies); what recipients get never names the Bcc recipients
  (RFC 5322 §3.6.3, the first of its three ways).
- Threading: a reply's ``In-Reply-To`` is the original's Message-Id and its
  ``References`` the original's References plus that Message-Id (RFC 5322
  §3.6.4), trimmed to the first and the last few ids when it grows long.
- Line endings are CRLF throughout, as stored and sent.
"""

from __future__ import annotations

import email.utils
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage

__all__ = [
    "Attachment",
    "Draft",
    "Person",
    "compose",
    "forward_subject",
    "make_message_id",
    "quote_html",
    "quote_text",
    "references_for",
    "reply_subject",
]

# Keep the first id and the newest ones; mail clients need no more to thread.
_MAX_REFERENCES = 20
_MSG_ID = re.compile(r"^<[^<>\s@]+@[^<>\s@]+>$")
_REPLY_PREFIX = re.compile(r"^\s*(re|aw|sv|antw)\s*:", re.IGNORECASE)
_FORWARD_PREFIX = re.compile(r"^\s*(fwd?|wg|tr)\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class Person:
    email: str  # local@domain, already checked
    name: str | None = None

    def header(self) -> str:
        """The address as a header value (the display name quoted or encoded as needed)."""
        local, _, domain = self.email.rpartition("@")
        return str(Address(display_name=self.name or "", username=local, domain=domain))


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str  # type/subtype
    data: bytes
    content_id: str | None = None  # without angle brackets
    inline: bool = False


@dataclass
class Draft:
    """Everything a composed message is made of."""

    sender: Person
    to: list[Person] = field(default_factory=list)
    cc: list[Person] = field(default_factory=list)
    bcc: list[Person] = field(default_factory=list)
    subject: str = ""
    text_body: str | None = None
    html_body: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    date: datetime | None = None


def is_message_id(value: str) -> bool:
    """``<left@right>`` as RFC 5322 §3.6.4 msg-id (no white space or brackets inside)."""
    return bool(_MSG_ID.match(value)) and len(value) <= 998


def make_message_id(domain: str) -> str:
    """A new globally unique Message-Id at ``domain`` (RFC 5322 §3.6.4)."""
    return email.utils.make_msgid(domain=domain)


def _needs_utf8(draft: Draft) -> bool:
    people = [draft.sender, *draft.to, *draft.cc, *draft.bcc]
    return any(not p.email.isascii() for p in people)


# Bodies are 7-bit clean (quoted-printable or base64 where needed): no 8BITMIME needed anywhere.
_BUILD = policy.default.clone(cte_type="7bit")


def _body(draft: Draft) -> EmailMessage:
    """The text, the HTML, or both as alternatives; inline parts related to the HTML."""
    msg = EmailMessage(policy=_BUILD)
    text, html_body = draft.text_body, draft.html_body
    inline = [a for a in draft.attachments if a.inline and a.content_id and html_body is not None]
    if html_body is None:
        msg.set_content(text or "", charset="utf-8")
        return msg
    if text is not None:
        msg.set_content(text, charset="utf-8")
        msg.add_alternative(html_body, subtype="html", charset="utf-8")
        parts = msg.get_payload()
        assert isinstance(parts, list)
        html_part = parts[-1]
        assert isinstance(html_part, EmailMessage)
    else:
        msg.set_content(html_body, subtype="html", charset="utf-8")
        html_part = msg
    for item in inline:
        maintype, _, subtype = item.content_type.partition("/")
        html_part.add_related(
            item.data, maintype, subtype, cid=f"<{item.content_id}>", filename=item.filename, disposition="inline"
        )
    return msg


def compose(draft: Draft, *, include_bcc: bool) -> bytes:
    """The message as bytes with CRLF line ends; ``include_bcc`` for the sender's own copies only."""
    msg = _body(draft)
    inline_ids = {id(a) for a in draft.attachments if a.inline and a.content_id and draft.html_body is not None}
    for item in draft.attachments:
        if id(item) in inline_ids:
            continue
        maintype, _, subtype = item.content_type.partition("/")
        msg.add_attachment(
            item.data,
            maintype,
            subtype,
            filename=item.filename,
            disposition="inline" if item.inline else "attachment",
            cid=f"<{item.content_id}>" if item.content_id else None,
        )
    # Headers go first in the conventional order, whatever the body parts set.
    body_headers = [(k, v) for k, v in msg.items()]
    for name in list(msg.keys()):
        del msg[name]
    msg["From"] = draft.sender.header()
    if draft.to:
        msg["To"] = ", ".join(p.header() for p in draft.to)
    if draft.cc:
        msg["Cc"] = ", ".join(p.header() for p in draft.cc)
    if include_bcc and draft.bcc:
        msg["Bcc"] = ", ".join(p.header() for p in draft.bcc)
    msg["Subject"] = draft.subject
    msg["Date"] = email.utils.format_datetime(draft.date or datetime.now(UTC))
    if draft.message_id:
        msg["Message-ID"] = draft.message_id
    if draft.in_reply_to:
        msg["In-Reply-To"] = draft.in_reply_to
    if draft.references:
        msg["References"] = " ".join(draft.references)
    msg["MIME-Version"] = "1.0"
    for name, value in body_headers:
        if name.lower() != "mime-version":
            msg[name] = value
    for part in msg.walk():
        if part is not msg:
            del part["MIME-Version"]  # the email package repeats it on parts it wraps; only the top needs it
    chosen = policy.SMTPUTF8 if _needs_utf8(draft) else policy.SMTP
    return msg.as_bytes(policy=chosen.clone(max_line_length=78))


# --- replies and forwards ---------------------------------------------------------


def reply_subject(subject: str | None) -> str:
    text = (subject or "").strip()
    return text if _REPLY_PREFIX.match(text) else f"Re: {text}".rstrip()


def forward_subject(subject: str | None) -> str:
    text = (subject or "").strip()
    return text if _FORWARD_PREFIX.match(text) else f"Fwd: {text}".rstrip()


def references_for(message_id: str | None, references: Sequence[str]) -> list[str]:
    """The References of a reply: the original's, then its Message-Id; at most ``_MAX_REFERENCES``."""
    chain = [r for r in references if is_message_id(r)]
    if message_id and is_message_id(message_id) and message_id not in chain:
        chain.append(message_id)
    if len(chain) > _MAX_REFERENCES:
        chain = chain[:1] + chain[-(_MAX_REFERENCES - 1) :]
    return chain


def _attribution(author: str | None, date: datetime | None) -> str:
    who = author or "someone"
    if date is None:
        return f"{who} wrote:"
    return f"On {email.utils.format_datetime(date)}, {who} wrote:"


def quote_text(text: str | None, author: str | None, date: datetime | None) -> str:
    """A reply's plain text: two empty lines to write in, the attribution, the original with ``> `` before each line."""
    lines = (text or "").replace("\r\n", "\n").rstrip("\n").split("\n")
    quoted = "\n".join(">" + ("" if line.startswith(">") or not line else " ") + line for line in lines)
    return f"\n\n{_attribution(author, date)}\n{quoted}\n"


def quote_html(safe_html: str, author: str | None, date: datetime | None) -> str:
    """A reply's HTML: the attribution and the (already sanitised) original in a cite blockquote."""
    return (
        f'<p></p><div>{html.escape(_attribution(author, date))}</div><blockquote type="cite">{safe_html}</blockquote>'
    )


def forward_header(fields: Sequence[tuple[str, str]]) -> str:
    """The block above a forwarded message's text: its From, Date, Subject, To, Cc."""
    lines = ["---------- Forwarded message ----------"]
    lines += [f"{name}: {value}" for name, value in fields if value]
    return "\n".join(lines)


def forward_text(text: str | None, fields: Sequence[tuple[str, str]]) -> str:
    return f"\n\n{forward_header(fields)}\n\n{(text or '').replace(chr(13) + chr(10), chr(10))}"


def forward_html(safe_html: str, fields: Sequence[tuple[str, str]]) -> str:
    head = "<br>".join(html.escape(line) for line in forward_header(fields).split("\n"))
    return f"<p></p><div>{head}</div><br>{safe_html}"
