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
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from relate.config import Config
from relate.delivery import Delivery, Kind, Sender, classify
from relate.errors import Invalid, RelateError
from relate.mail import compose as mime
from relate.mail.address import split_address
from relate.mailauth.verdict import submission_results
from relate.store import drafts, sending
from relate.store.messages import StoredMessage

MAX_RECIPIENTS = 100
# Compose in a worker thread past this many attachment bytes, off the event loop.
THREADED_COMPOSE = 256 * 1024


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
    delivery = Delivery(pool, edit.sender.email, sender=Sender(user_id, edit.sender.email), quota=cfg.quota)
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
