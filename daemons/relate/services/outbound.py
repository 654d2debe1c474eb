"""Sending mail written through the API: a message sent at once, a draft, a reply or a forward, over one path.

Policy:

- The caller has checked the request (fields, sizes, that From is one of the
  user's addresses); this is what sending means from there. Recipients are
  taken once each (the first of to, cc, bcc that names an address wins), 1 to
  ``MAX_RECIPIENTS`` of them; a local address that does not exist is refused
  (Invalid) before anything is stored.
- The user's daily sending limits (``submission.limits``, the budget SMTP
  submission shares) are charged first: over one, :class:`SendingLimit` and
  nothing is stored or queued.
- The message gets a Message-Id at the sender's domain and the date; Bcc
  recipients never appear in the message sent, and do in the Sent copy.
  Local copies carry our Authentication-Results for an authenticated sender,
  as submission's do. Everything goes through relate.delivery's one
  transaction (local copies, the Sent copy, the queued outbound record):
  nothing is durable before it commits.
- The local copies are announced by the change feed at commit, as
  deliveries (store/messages.py): relate-api's hub and web push hear them
  there, whoever sent (REST, SMTP submission); the caller announces nothing.
- A reply or a forward starts as an :class:`Edit` made here from a message of
  the user's (RFC 5322 §3.6.4, §3.6.5): Re: or Fwd: subject, the original
  quoted (its HTML sanitised first; an HTML-only original is quoted in the
  text part as its rendered text), In-Reply-To and References from it, and
  From the user's address the original was written to (an alias, say), else
  their primary one. A reply goes to Reply-To, else From (to the original's
  To when the user wrote it); reply-all adds To and Cc, never the user's own
  addresses, each address once. A forward carries the original's
  attachments. The caller then applies what the request changes and saves
  it as a draft or sends it.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from relate.config import Config
from relate.delivery import Delivery, Kind, Sender, classify
from relate.errors import Invalid, NotFound, RelateError
from relate.mail import compose as mime
from relate.mail.address import comparable_address, normalize_address, split_address
from relate.mail.display import sanitize_html
from relate.mail.mime import Address, ParsedMessage, parse_message, part_content
from relate.mailauth.verdict import submission_results
from relate.store import accounts, drafts, sending
from relate.store import emails as email_store
from relate.store.messages import StoredMessage

MAX_RECIPIENTS = 100
# Compose in a worker thread past this many attachment bytes, off the event loop.
THREADED_COMPOSE = 256 * 1024
# A MIME type/subtype as attachments may carry it (RFC 6838 §4.2 names).
CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+\-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+\-]{0,126}$")


@dataclass
class Edit:
    """A draft being written: what it says, and what happens to its attachments."""

    sender: mime.Person
    to: list[mime.Person] = field(default_factory=list)
    cc: list[mime.Person] = field(default_factory=list)
    bcc: list[mime.Person] = field(default_factory=list)
    subject: str | None = None
    text_body: str | None = None
    html_body: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    existing: dict[int, int] = field(default_factory=dict)  # attachment id -> size, of the stored draft
    keep: list[int] | None = None  # None: keep every existing attachment
    new: list[drafts.NewAttachment] = field(default_factory=list)

    def recipients(self) -> list[drafts.Recipient]:
        return [
            drafts.Recipient(kind, p.email, p.name)
            for kind, people in (("to", self.to), ("cc", self.cc), ("bcc", self.bcc))
            for p in people
        ]

    def attachment_bytes(self) -> int:
        kept = self.existing.keys() if self.keep is None else self.keep
        return sum(self.existing[i] for i in kept) + sum(len(a.data) for a in self.new)

    def fields(self) -> drafts.Fields:
        return drafts.Fields(
            from_address=self.sender.email,
            from_name=self.sender.name,
            subject=self.subject,
            text_body=self.text_body,
            html_body=self.html_body,
            in_reply_to=self.in_reply_to,
            references=self.references,
            recipients=self.recipients(),
            keep_attachments=self.keep,
            new_attachments=self.new,
        )


class SendingLimit(RelateError):
    """The user is over a daily sending limit; nothing was sent. ``first``: the first refusal of this spell."""

    def __init__(self, over: str, first: bool, summary: str) -> None:
        super().__init__(f"4.7.0 daily sending limit reached ({over} per day); try again later")
        self.over = over
        self.first = first
        self.summary = summary


@dataclass(frozen=True)
class Sent:
    outbound_id: int
    local: list[StoredMessage]  # the copies stored for local recipients


def compose_draft(edit: Edit, attachments: list[mime.Attachment], **extra: Any) -> mime.Draft:
    return mime.Draft(
        sender=edit.sender,
        to=edit.to,
        cc=edit.cc,
        bcc=edit.bcc,
        subject=edit.subject or "",
        text_body=edit.text_body,
        html_body=edit.html_body,
        attachments=attachments,
        in_reply_to=edit.in_reply_to,
        references=edit.references,
        **extra,
    )


async def compose(draft: mime.Draft, *, include_bcc: bool) -> bytes:
    if sum(len(a.data) for a in draft.attachments) > THREADED_COMPOSE:
        return await asyncio.to_thread(mime.compose, draft, include_bcc=include_bcc)
    return mime.compose(draft, include_bcc=include_bcc)


async def send(
    pool: asyncpg.Pool,
    cfg: Config,
    user_id: int,
    address: str,
    edit: Edit,
    attachments: list[mime.Attachment],
    row: dict[str, Any] | None,
) -> Sent:
    """Check, compose and deliver ``edit`` for the user (``address``: their primary address); ``row`` is the
    draft being sent, if any. Returns once the delivery transaction has committed."""
    recipients: list[drafts.Recipient] = []
    seen: set[str] = set()
    for r in edit.recipients():
        if r.address not in seen:
            seen.add(r.address)
            recipients.append(r)
    if not recipients:
        raise Invalid("a message needs at least one recipient (to, cc or bcc)")
    if len(recipients) > MAX_RECIPIENTS:
        raise Invalid(f"a message may have at most {MAX_RECIPIENTS} recipients (to, cc and bcc together)")
    _, domain = split_address(edit.sender.email)
    message_id = mime.make_message_id(domain)
    delivery = Delivery(
        pool, edit.sender.email, sender=Sender(user_id, edit.sender.email), quota=cfg.quota, sieve=cfg.sieve
    )
    checked = []
    for r in recipients:
        target = await classify(pool, r.address, cfg.quota)
        if target.kind is Kind.UNKNOWN:
            raise Invalid(f"{r.address} does not exist")
        delivery.add(target)
        checked.append(drafts.Recipient(r.kind, r.address, r.name, local=target.kind is Kind.LOCAL))
    limits = sending.Limits.of(cfg.submission.limits)
    found = await sending.charge(pool, user_id, [r.address for r in recipients], limits)
    if found.over is not None:
        raise SendingLimit(found.over, found.first, found.summary)
    draft = compose_draft(edit, attachments, message_id=message_id, date=datetime.now().astimezone())
    message = await compose(draft, include_bcc=False)
    sent_copy = await compose(draft, include_bcc=True) if edit.bcc else None
    record = drafts.Sent(
        user_id=user_id,
        from_address=edit.sender.email,
        from_name=edit.sender.name,
        mail_from=edit.sender.email,
        subject=edit.subject,
        text_body=edit.text_body,
        html_body=edit.html_body,
        message_id=message_id,
        in_reply_to=edit.in_reply_to,
        references=edit.references,
        recipients=checked,
        email_id=None if row is None else row["id"],
        version=None if row is None else row["updated_at"],
    )
    # The local copies say who sent them, as submission's do (relate.mailauth; the Sent copy does not).
    results = submission_results(cfg, address)
    committed = await delivery.commit(message, sent_copy=sent_copy, record=record, results=results)
    assert committed.outbound_id is not None
    return Sent(committed.outbound_id, list(committed.local))


# --- replies and forwards -------------------------------------------------------------------------------


async def default_sender(pool: asyncpg.Pool, address: str) -> mime.Person:
    """The user's primary address with their display name."""
    user = await accounts.get_user(pool, address)
    return mime.Person(address, (user or {}).get("display_name") or None)


async def _original(pool: asyncpg.Pool, user_id: int, email_id: int) -> tuple[dict[str, Any], ParsedMessage]:
    row = await email_store.get(pool, user_id, email_id)
    if row is None:
        raise NotFound("email not found")
    return row, await asyncio.to_thread(parse_message, bytes(row["raw"]))


def _author(addresses: list[Address]) -> str | None:
    if not addresses:
        return None
    first = addresses[0]
    return f"{first.name} <{first.email}>" if first.name else first.email


def _valid_people(addresses: list[Address], skip: set[str]) -> list[mime.Person]:
    """Addresses from a received message that can be written to, without ``skip`` and duplicates."""
    found = []
    for a in addresses:
        try:
            normalized = normalize_address(a.email)
        except Invalid:
            continue
        if normalized not in skip:
            skip.add(normalized)
            found.append(mime.Person(normalized, a.name or None))
    return found


async def _own_sender(pool: asyncpg.Pool, address: str, own: set[str], parsed: ParsedMessage) -> mime.Person:
    """The user's address the original was written to (an alias, say), else their primary one."""
    default = await default_sender(pool, address)
    for a in (*parsed.to, *parsed.cc, *parsed.bcc):
        found = comparable_address(a.email)
        if found in own and found != default.email:
            return mime.Person(found, default.name)
    return default


def _threading(parsed: ParsedMessage) -> dict[str, Any]:
    """In-Reply-To and References of an answer to ``parsed`` (RFC 5322 §3.6.4)."""
    valid = parsed.message_id if parsed.message_id and mime.is_message_id(parsed.message_id) else None
    return {"in_reply_to": valid, "references": mime.references_for(parsed.message_id, parsed.references)}


async def reply(pool: asyncpg.Pool, user_id: int, address: str, email_id: int, *, reply_all: bool) -> Edit:
    """The reply (to all, with ``reply_all``) to the user's message ``email_id``; NotFound if it is not theirs."""
    _, parsed = await _original(pool, user_id, email_id)
    own = await accounts.user_addresses(pool, user_id)
    sender = await _own_sender(pool, address, own, parsed)
    wrote_it = bool(parsed.from_) and comparable_address(parsed.from_[0].email) in own
    skip = set() if wrote_it else set(own)
    to = _valid_people(parsed.to if wrote_it else (parsed.reply_to or parsed.from_), skip)
    cc: list[mime.Person] = []
    if reply_all:
        to += _valid_people([] if wrote_it else parsed.to, skip)
        cc = _valid_people(parsed.cc, skip)
    author = _author(parsed.from_)
    text = parsed.text_body if parsed.text_body is not None else parsed.text
    html = parsed.html_body
    return Edit(
        sender=sender,
        to=to,
        cc=cc,
        subject=mime.reply_subject(parsed.subject),
        text_body=mime.quote_text(text, author, parsed.date),
        html_body=None if html is None else mime.quote_html(sanitize_html(html), author, parsed.date),
        **_threading(parsed),
    )


async def forward(pool: asyncpg.Pool, user_id: int, address: str, email_id: int) -> Edit:
    """The forward of the user's message ``email_id``, its attachments carried; NotFound if it is not theirs."""
    row, parsed = await _original(pool, user_id, email_id)
    raw = bytes(row["raw"])
    carried = []
    for a in row["attachments"] or []:
        content = await asyncio.to_thread(part_content, raw, a["part"])
        if content is None:
            continue
        content_type = (a.get("contentType") or "application/octet-stream").lower()
        carried.append(
            drafts.NewAttachment(
                filename=a.get("filename") or "attachment",
                content_type=content_type if CONTENT_TYPE.match(content_type) else "application/octet-stream",
                data=content,
                content_id=(a.get("contentId") or "").strip("<>") or None,
                inline=bool(a.get("inline")),
            )
        )
    fields = [
        ("From", ", ".join(_author([p]) or "" for p in parsed.from_)),
        ("Date", email.utils.format_datetime(parsed.date) if parsed.date else ""),
        ("Subject", parsed.subject or ""),
        ("To", ", ".join(_author([p]) or "" for p in parsed.to)),
        ("Cc", ", ".join(_author([p]) or "" for p in parsed.cc)),
    ]
    own = await accounts.user_addresses(pool, user_id)
    text = parsed.text_body if parsed.text_body is not None else parsed.text
    html = parsed.html_body
    return Edit(
        sender=await _own_sender(pool, address, own, parsed),
        subject=mime.forward_subject(parsed.subject),
        text_body=mime.forward_text(text, fields),
        html_body=None if html is None else mime.forward_html(sanitize_html(html), fields),
        new=carried,
        **_threading(parsed),
    )
