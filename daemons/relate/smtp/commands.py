"""The SMTP verbs: one table (verb, handler, where it is allowed, RFC) and the handlers.

Before a handler runs, :meth:`Verb.admit` checks, in this order: that the
verb exists on this port (AUTH only on submission: ``502 5.5.1``), that TLS
is up where the port requires it (587 before STARTTLS allows only EHLO, HELO,
STARTTLS, NOOP and QUIT: ``530 5.7.0``), that the user has authenticated
where the port requires it (MAIL, RCPT, DATA: ``530 5.7.0``), and that the
session is in a state the verb is allowed in (``503 5.5.1``). Then the
arguments are parsed and the handler runs.

Postmaster (RFC 5321 §4.5.1: "MUST" accept): ``<postmaster>`` and
``postmaster@`` every hosted domain are accepted on every port, whatever
else is refused. Mail to ``postmaster@domain`` goes where that address (or
alias) says when it exists; otherwise to ``smtp.postmaster`` when that is
set and names a local address; otherwise to the domain's first user (the one
created first, normally the admin ``relatectl setup`` made). The bare
``<postmaster>`` is postmaster of the first hosted domain. Only a domain
without any user refuses it (``550 5.1.1``, and a warning in the log).

Memory: DATA is spooled (memory while small, an unlinked temporary file
after; :mod:`relate.smtp.data`). Storing a message reserves about twice its
size from the daemon's memory budget (``smtp.memory_budget``) around each
step that needs a copy of it whole in memory (parsing, in
:mod:`relate.delivery`); the rest of the store streams from the spool. When
the reservation does not fit within ``smtp.memory_wait`` seconds the answer
is ``452 4.3.1`` and the sender tries again later. A declared ``SIZE=`` is
not checked against the budget at MAIL: the budget is held only while a
message is parsed, about a second for the largest, while the transfer that
follows MAIL takes longer than that; refusing early would only delay mail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from relate.delivery import Delivery, Hold, Kind, MailboxFull, Recipient, Sender, admit, classify, local_recipient
from relate.errors import Invalid
from relate.mail.address import normalize_address, split_address
from relate.mail.spool import Spool
from relate.mailauth import verdict as mailauth
from relate.mailauth.verdict import DEFER, DELIVER, JUNK, REFUSE, rewrite
from relate.runtime import metrics
from relate.runtime.budget import BudgetExhausted
from relate.sieve import srs
from relate.smtp import headers, parser, replies
from relate.smtp.data import DataState, read_data
from relate.smtp.errors import Hangup, SmtpError
from relate.smtp.session import DATABASE_ERRORS, Envelope, SmtpSession, State, check_login, decode_sasl
from relate.spam import filter as spam_filter
from relate.spam import rspamd
from relate.store import accounts, sending
from relate.store.quota import Verdict

log = logging.getLogger("relate.smtp")

Handler = Callable[[SmtpSession, parser.Command], Awaitable[None]]

ALL = frozenset(State)
SUBMISSION = frozenset({"submission", "submissions"})
EVERY_ROLE = frozenset({"mx", *SUBMISSION})
_HELO_SAFE = re.compile(r"[^A-Za-z0-9.\-\[\]:_]")
# Memory a message needs while it is stored, per byte of it (runtime/budget.py): the bytes once, and the parser's share.
MEMORY_PER_BYTE = 2


@dataclass(frozen=True)
class Verb:
    name: str
    handler: Handler
    states: frozenset[State]
    rfc: str
    roles: frozenset[str] = EVERY_ROLE
    before_tls: bool = False  # allowed on 587 before STARTTLS
    needs_auth: bool = False  # on the submission ports, only after AUTH

    def admit(self, session: SmtpSession) -> None:
        """Whether this verb may run now; raises SmtpError with the refusal (see the module docstring)."""
        if session.role not in self.roles:
            raise SmtpError(replies.NOT_IMPLEMENTED)
        if session.role == "submission" and not session.tls_active and not self.before_tls:
            raise SmtpError(replies.STARTTLS_FIRST)
        if self.needs_auth and session.role != "mx" and session.principal_id is None:
            raise SmtpError(replies.AUTH_REQUIRED)
        if session.state not in self.states:
            raise SmtpError(replies.BAD_SEQUENCE)


# -- session ----------------------------------------------------------------------------


# RFC 5321 §4.1.1.1 (EHLO, HELO); RFC 2034 §3: no enhanced codes in these replies.
async def hello(session: SmtpSession, cmd: parser.Command) -> None:
    assert isinstance(cmd, parser.Hello)
    session.greeted = True
    session.extended = cmd.verb == "EHLO"
    session.helo_name = cmd.domain
    session.envelope = None  # EHLO and HELO end any transaction (§4.1.4)
    hostname = session.server.cfg.hostname
    if not session.extended:
        session.reply(replies.Reply(250, "", hostname))
        return
    lines = [
        hostname,
        f"SIZE {session.cfg.max_message_size}",  # RFC 1870
        "8BITMIME",  # RFC 6152
        "SMTPUTF8",  # RFC 6531
        "PIPELINING",  # RFC 2920
        "ENHANCEDSTATUSCODES",  # RFC 2034
    ]
    if not session.tls_active and session.role != "submissions" and session.server.tls_for(session.role):
        lines.append("STARTTLS")  # RFC 3207
    if session.auth_offered:
        lines.append("AUTH PLAIN LOGIN")  # RFC 4954
    lines.append("HELP")
    session.reply_lines(250, lines)


# RFC 3207 §4 (STARTTLS)
async def starttls(session: SmtpSession, cmd: parser.Command) -> None:
    if session.tls_active or session.role == "submissions":
        raise SmtpError(replies.BAD_SEQUENCE)  # §4.2: no second STARTTLS (465 is TLS already)
    if session.server.tls_for(session.role) is None:
        raise SmtpError(replies.TLS_UNAVAILABLE)
    await session.start_tls()


# RFC 4954 §4 (AUTH), RFC 4616 (PLAIN), draft-murchison-sasl-login (LOGIN)
async def auth(session: SmtpSession, cmd: parser.Command) -> None:
    assert isinstance(cmd, parser.Auth)
    if session.principal_id is not None:
        raise SmtpError(replies.BAD_SEQUENCE)  # §4: once per session
    if cmd.mechanism == "PLAIN":
        response = await session.sasl_response(b"") if cmd.initial is None else _initial(cmd.initial)
        parts = response.split(b"\x00")
        if len(parts) != 3:
            raise SmtpError(replies.BAD_BASE64)
        authzid, login, password = parts
        if authzid and authzid != login:
            password = b""  # acting as another user is not supported: fails, and is logged, as a bad key
    elif cmd.mechanism == "LOGIN":
        login = await session.sasl_response(b"Username:") if cmd.initial is None else _initial(cmd.initial)
        password = await session.sasl_response(b"Password:")
    else:
        raise SmtpError(replies.AUTH_MECHANISM)
    await check_login(session, login, password)


def _initial(text: str) -> bytes:
    return decode_sasl(text.encode("utf-8", "surrogateescape"))


# RFC 5321 §4.1.1.5 (RSET)
async def rset(session: SmtpSession, cmd: parser.Command) -> None:
    session.envelope = None
    session.reply(replies.OK)


# RFC 5321 §4.1.1.9 (NOOP): any argument is ignored
async def noop(session: SmtpSession, cmd: parser.Command) -> None:
    session.reply(replies.OK)


# RFC 5321 §4.1.1.8 (HELP)
async def help_(session: SmtpSession, cmd: parser.Command) -> None:
    session.reply(replies.HELP)


# RFC 5321 §4.1.1.6 (VRFY), §3.5.3: 252, confirming nothing (no address harvesting)
async def vrfy(session: SmtpSession, cmd: parser.Command) -> None:
    session.reply(replies.VRFY_NO)


# RFC 5321 §4.1.1.7 (EXPN), §3.5.2: lists are not expanded for anyone
async def expn(session: SmtpSession, cmd: parser.Command) -> None:
    session.reply(replies.NOT_IMPLEMENTED)


# RFC 5321 §4.1.1.10 (QUIT)
async def quit_(session: SmtpSession, cmd: parser.Command) -> None:
    session.reply(replies.BYE)
    raise Hangup()


# -- the transaction ---------------------------------------------------------------------


# RFC 5321 §4.1.1.2 (MAIL), RFC 1870 (SIZE), RFC 6152 (BODY), RFC 6531 (SMTPUTF8)
async def mail(session: SmtpSession, cmd: parser.Command) -> None:
    assert isinstance(cmd, parser.Mail)
    options = parser.mail_options(cmd.params, extended=session.extended, auth_offered=session.auth_offered)
    path = cmd.path
    if path is not None:
        if path.routed:
            raise SmtpError(replies.BAD_ADDRESS)  # source routes are refused, not silently dropped
        if not path.ascii and not options.smtputf8:
            raise SmtpError(replies.NEEDS_SMTPUTF8)
    if options.size is not None and options.size > session.cfg.max_message_size:
        raise SmtpError(replies.TOO_BIG)
    address = "" if path is None else path.address
    if session.role != "mx":
        owned = await session.owned_addresses()
        try:
            address = normalize_address(address)
        except Invalid:
            raise SmtpError(replies.SENDER_NOT_OWNED) from None
        if address not in owned:
            log.warning("smtp-spoof client=%s auth=%s mail_from=%s", session.client, session.principal_address, address)
            raise SmtpError(replies.SENDER_NOT_OWNED)
    session.envelope = Envelope(address, smtputf8=options.smtputf8, size=options.size)
    session.last_sender = f"<{address}>"
    session.reply(replies.SENDER_OK)


# RFC 5321 §4.1.1.3 (RCPT), §4.5.1 (postmaster); the relay policy of relate.smtp.session
async def rcpt(session: SmtpSession, cmd: parser.Command) -> None:
    assert isinstance(cmd, parser.Rcpt)
    envelope = session.envelope
    assert envelope is not None
    parser.rcpt_options(cmd.params)
    if len(envelope.recipients) >= session.cfg.max_recipients:
        raise SmtpError(replies.TOO_MANY_RECIPIENTS)
    path = cmd.path
    if path is None:  # the bare <postmaster>
        address = "postmaster"
        recipient = await _postmaster(session, None)
    else:
        if path.routed or path.quoted or path.literal:
            raise SmtpError(replies.BAD_ADDRESS)
        if not path.ascii and not envelope.smtputf8:
            raise SmtpError(replies.NEEDS_SMTPUTF8)
        try:
            address = normalize_address(path.address)
            local, domain = split_address(address)
        except Invalid:
            raise SmtpError(replies.BAD_ADDRESS) from None
        with session.database("rcpt"):
            recipient = await classify(session.server.pool, address, session.server.cfg.quota)
        if recipient.kind is Kind.UNKNOWN and local == "postmaster":
            recipient = await _postmaster(session, domain)
        elif recipient.kind is Kind.UNKNOWN and local.startswith("srs0") and session.role == "mx":
            recipient = await _srs(session, address, domain)
    if recipient is None or recipient.kind is Kind.UNKNOWN:
        raise SmtpError(replies.UNKNOWN_USER)
    if recipient.kind is Kind.REMOTE and session.role == "mx" and envelope.srs_owner is None:
        log.info("smtp-relay-denied client=%s rcpt=%s", session.client, address)
        raise SmtpError(replies.RELAY_DENIED)
    if session.role == "mx":
        await _check_quota(session, recipient, envelope.size or 0)
    envelope.recipients.append(recipient)
    envelope.addresses.append(address)
    session.reply(replies.RECIPIENT_OK)


async def _check_quota(session: SmtpSession, recipient: Recipient, size: int) -> None:
    """MX: a recipient whose mailbox is full, or too full for the size MAIL FROM declared, is refused here,
    with a reply of its own (452 4.2.2 for now, 552 5.2.2 for good: store/quota.py's rules)."""
    with session.database("rcpt"):
        verdict = await admit(session.server.pool, recipient, size, session.server.cfg.quota)
    if verdict is Verdict.FITS:
        return
    log.info("smtp-quota client=%s rcpt=%s size=%d refused=%s", session.client, recipient.address, size, verdict.value)
    raise SmtpError(replies.MAILBOX_FULL if verdict is Verdict.LATER else replies.MAILBOX_FULL_FOR_GOOD)


async def _srs(session: SmtpSession, address: str, domain: str) -> Recipient | None:
    """MX: an SRS0 address at a hosted domain (a bounce of a Sieve redirect, relate/sieve/redirect.py) is the
    original sender when its hash and age check out (relate/sieve/srs.py): a local one gets it delivered, a
    remote one through the queue as the domain's postmaster user; a forged or expired one is unknown (550)."""
    pool = session.server.pool
    with session.database("rcpt"):
        original = srs.reverse(address, await srs.secret(pool))
        found = await classify(pool, original, session.server.cfg.quota) if original else None
        owner = await accounts.postmaster_target(pool, domain) if found and found.kind is Kind.REMOTE else None
    if found is None or found.kind is Kind.UNKNOWN or (found.kind is Kind.REMOTE and owner is None):
        log.info("smtp-srs-refused client=%s rcpt=%s", session.client, address)
        return None
    if found.kind is Kind.REMOTE:
        assert session.envelope is not None
        assert owner is not None
        session.envelope.srs_owner = owner["user_id"]
    log.info("smtp-srs client=%s rcpt=%s to=%s", session.client, address, found.address)
    return found


async def _postmaster(session: SmtpSession, domain: str | None) -> Recipient | None:
    """Who reads postmaster@``domain`` (None: the bare <postmaster>), by the rule in the module docstring."""
    pool = session.server.pool
    configured = session.cfg.postmaster
    if configured:
        try:
            with session.database("rcpt"):
                found = await classify(pool, normalize_address(configured), session.server.cfg.quota)
        except Invalid:
            found = None
        if found is not None and found.kind is Kind.LOCAL:
            return found
        log.warning("smtp-postmaster-unknown address=%s: using the domain's first user", configured)
    with session.database("rcpt"):
        target = await accounts.postmaster_target(pool, domain)
    if target is None:
        log.warning("smtp-postmaster-unroutable domain=%s: the domain has no user", domain or "-")
        return None
    return local_recipient(f"postmaster@{target['domain']}", target)


# RFC 5321 §4.1.1.4 (DATA): 250 only once the transaction has committed.
async def data(session: SmtpSession, cmd: parser.Command) -> None:
    envelope = session.envelope
    assert envelope is not None
    cfg = session.cfg
    session.reply(replies.START_DATA)
    session.busy = True
    spool = Spool()
    try:
        # §4.5.3.2: the whole transfer gets the (longer) data timeout.
        session.arm(cfg.data_timeout)
        try:
            await session.flush()
            result = await read_data(
                session.reader, spool, size_limit=cfg.max_message_size, line_limit=cfg.max_line_length
            )
        finally:
            session.disarm()
        session.envelope = None  # the transaction is over, whatever the answer (§4.1.1.4)
        if result.state is DataState.TOO_LONG:
            reply = replies.LINE_TOO_LONG
        elif result.state is DataState.TOO_MUCH:
            reply = replies.TOO_BIG
        elif result.state is DataState.NO_SPACE:
            log.warning("smtp-tempfail client=%s stage=spool error=%s", session.client, result.error)
            reply = replies.NO_MEMORY
        else:
            session.messages += 1
            session.bytes_in += result.size
            session.recipient_count += len(envelope.recipients)
            reply = await _store(session, envelope, spool)
        session.last_result = str(reply.code)
        if reply.code == 250:
            metrics.child(metrics.SMTP_ACCEPTED, session.role).inc()
        else:
            metrics.child(metrics.SMTP_REFUSED, session.role, replies.refusal_reason(reply)).inc()
        session.reply(reply)
    finally:
        spool.close()
        session.busy = False


async def _store(session: SmtpSession, envelope: Envelope, spool: Spool) -> replies.Reply:
    """Check (submission), store and queue one message; the final reply."""
    server = session.server
    sender = None
    queue_id = secrets.token_hex(6)
    trace = _received(session, envelope, queue_id)

    def hold(size: int) -> AbstractAsyncContextManager[None]:
        # Around each step that has a copy of the message in memory (parsing it), and only those.
        return server.budget.reserve(MEMORY_PER_BYTE * size, wait=session.cfg.memory_wait)

    try:
        head = await spool.head(headers.MAX_HEADER_SECTION)
        if session.role != "mx":
            refusal = await _check_headers(session, head)
            if refusal is not None:
                return refusal
            assert session.principal_id is not None
            assert session.principal_address is not None
            sender = Sender(session.principal_id, session.principal_address)
            if not await _within_limits(session, sender, envelope):
                return replies.SENDING_LIMIT
        verdict = await _authenticate(session, envelope, head, spool, hold)
        if verdict.action in (REFUSE, DEFER):
            return replies.NOT_AUTHENTICATED if verdict.action == REFUSE else replies.UNVERIFIED
        spam = await _filter(session, envelope, head, spool, queue_id)
        if spam.action in (REFUSE, DEFER):
            return replies.SPAM_REFUSED if spam.action == REFUSE else replies.SPAM_DEFERRED
        verdict = _without_spam_fields(verdict, spam, head)
        junk = None if verdict.action == JUNK else spam.junk  # None: everyone's copy
        recipients = await _to_junk(session, envelope.recipients, junk) if junk != frozenset() else envelope.recipients
        group = server.commit_group if sender is None else None
        delivery = Delivery(
            server.pool, envelope.mail_from, sender=sender, quota=server.cfg.quota, group=group, sieve=server.cfg.sieve
        )
        delivery.bounce_owner = envelope.srs_owner
        for recipient in recipients:
            delivery.add(recipient)
        body = await rewrite(spool, verdict, _missing_fields(session, head) if sender is not None else b"")
        del head  # up to MAX_HEADER_SECTION: not held while the message is stored
        try:
            committed = await delivery.commit(body, trace=trace, hold=hold, results=verdict.header + spam.fields)
        finally:
            if body is not spool:
                body.close()
    except MailboxFull as full:
        log.info(
            "smtp-quota client=%s rcpts=%s size=%d refused=%s",
            session.client,
            ",".join(envelope.addresses),
            spool.size,
            "never" if full.permanent else "later",
        )
        return replies.MAILBOX_FULL_FOR_GOOD if full.permanent else replies.MAILBOX_FULL
    except BudgetExhausted:
        log.warning(
            "smtp-tempfail client=%s stage=data error=memory-budget size=%d in_use=%d",
            session.client,
            spool.size,
            server.budget.in_use,
        )
        return replies.NO_MEMORY
    except DATABASE_ERRORS as exc:
        log.warning("smtp-tempfail client=%s stage=data error=%s", session.client, type(exc).__name__)
        return replies.TEMPFAIL
    if log.isEnabledFor(logging.INFO):  # (its arguments are made only for a line that is written)
        log.info(
            "smtp-accepted id=%s client=%s from=<%s> rcpts=%d local=%d remote=%d size=%d%s",
            queue_id,
            session.client,
            envelope.mail_from,
            len(envelope.recipients),
            len(committed.local),
            len(delivery.remote),
            spool.size,
            f" {_results(verdict)}" if session.role == "mx" and verdict.header else "",
        )
    if committed.sent_over_quota:
        return replies.QUEUED.with_text(f"Message accepted as {queue_id}; not saved to Sent: mailbox full")
    return replies.QUEUED.with_text(f"Message accepted as {queue_id}")


async def _within_limits(session: SmtpSession, sender: Sender, envelope: Envelope) -> bool:
    """Submission: count the message against the user's daily sending limits (store/sending.py); whether it
    fits. The first refusal by a limit since the user's last message that fitted is logged, once."""
    limits = sending.Limits.of(session.server.cfg.submission.limits)
    found = await sending.charge(session.server.pool, sender.user_id, envelope.addresses, limits)
    if found.over is None:
        return True
    if found.first:
        log.warning(
            "smtp-sending-limit user=%s %s client=%s: the user's mail is refused (451 4.7.0) until the last "
            "24 hours' count falls under the limit (relatectl user limits)",
            sender.address,
            found.summary,
            session.client,
        )
    return False


async def _authenticate(
    session: SmtpSession, envelope: Envelope, head: bytes, spool: Spool, hold: Hold
) -> mailauth.Verdict:
    """SPF, DKIM and DMARC (port 25) or the submission's login: the verdict of relate.mailauth. A message
    delivered as usual has its results in its ``smtp-accepted`` line; any other outcome gets a line here."""
    checker = session.server.checker
    if session.role != "mx":
        assert session.principal_address is not None
        return await checker.submitted(head, session.principal_address)
    verdict = await checker.inbound(
        client=session.client, helo=session.helo_name, mail_from=envelope.mail_from, head=head, spool=spool, hold=hold
    )
    if verdict.header and verdict.action != DELIVER:
        log.info(
            "smtp-authentication client=%s from=<%s> %s action=%s%s",
            session.client,
            envelope.mail_from,
            _results(verdict),
            verdict.action,
            f" reason={verdict.reason!r}" if verdict.reason else "",
        )
    return verdict


def _results(verdict: mailauth.Verdict) -> str:
    """The checks' results for a log line."""
    dkim = ",".join(d.result for d in verdict.dkim) or "none"
    spf = verdict.spf.result if verdict.spf else "-"
    arc = f" arc={verdict.arc.result}" if verdict.arc.result != "none" else ""
    return f"spf={spf} dkim={dkim}{arc} dmarc={verdict.dmarc.result if verdict.dmarc else '-'}"


def _missing_fields(session: SmtpSession, head: bytes) -> bytes:
    """Submission: the Date and Message-ID fields the message lacks (relate.smtp.headers), to prepend."""
    assert session.principal_address is not None
    domain = session.principal_address.rpartition("@")[2]
    return headers.missing_fields(head, domain, email.utils.localtime())


async def _filter(
    session: SmtpSession, envelope: Envelope, head: bytes, spool: Spool, queue_id: str
) -> spam_filter.SpamVerdict:
    """The spam filter's verdict (relate.spam.filter: the recipients' sender lists, then rspamd), logged."""
    spam = session.server.spam
    if not spam.enabled:
        # Filter off: fields of our names are still taken out of mail from outside, so that none is ever
        # read as ours (the REST detail's spam block).
        return spam_filter.SpamVerdict(spam_filter.DELIVER, strip=session.role == "mx")
    about = rspamd.Envelope(
        client=session.client,
        helo=session.helo_name,
        mail_from=envelope.mail_from,
        recipients=envelope.addresses,
        queue_id=queue_id,
        user=session.principal_address,
    )
    users = [r.user_id for r in envelope.recipients if r.user_id is not None]
    section = mailauth.header_section(head)
    found = await spam.judge(spool, section, about, users, submitted=session.role != "mx")
    if found.result is not None or found.reason:
        log.info(
            "smtp-spam id=%s client=%s from=<%s> action=%s score=%s junk=%d%s",
            queue_id,
            session.client,
            envelope.mail_from,
            found.action,
            f"{found.result.score:.2f}" if found.result else "-",
            len(found.junk),
            f" reason={found.reason!r}" if found.reason else "",
        )
    return found


def _without_spam_fields(verdict: mailauth.Verdict, spam: spam_filter.SpamVerdict, head: bytes) -> mailauth.Verdict:
    """The verdict with the message's own X-Spam-* fields taken out of the header section it writes (when the
    spam filter writes its own, and on port 25 always), and with rspamd's Subject in place of the message's
    when it said "rewrite subject"."""
    if not spam.strip and not spam.subject:
        return verdict
    section = mailauth.header_section(head)
    current = section if verdict.section is None else verdict.section
    stripped = spam_filter.strip_fields(current) if spam.strip else None
    if spam.subject:
        stripped = spam_filter.replace_subject(current if stripped is None else stripped, spam.subject)
    if stripped is None:
        return verdict
    return dataclasses.replace(verdict, section=stripped, section_size=len(section))


async def _to_junk(
    session: SmtpSession, recipients: list[Recipient], users: frozenset[int] | None = None
) -> list[Recipient]:
    """The recipients (of ``users`` only, when given) with their Junk folder in place of their INBOX (those
    without one keep their INBOX)."""
    wanted = [r.user_id for r in recipients if r.user_id is not None and (users is None or r.user_id in users)]
    junk = await accounts.junk_folders(session.server.pool, wanted)
    return [dataclasses.replace(r, inbox_id=junk[r.user_id]) if r.user_id in junk else r for r in recipients]


async def _check_headers(session: SmtpSession, head: bytes) -> replies.Reply | None:
    """Submission: every From and Sender address must be the user's (relate.smtp.headers); the refusal, or None."""
    named = await asyncio.to_thread(headers.named_addresses, head)
    if named is None:
        return replies.HEADER_TOO_BIG
    owned = await session.owned_addresses()
    for field, refusal in (("from", replies.FROM_NOT_OWNED), ("sender", replies.SENDER_HEADER_NOT_OWNED)):
        found = named[field]
        if found is None or (field == "from" and not found) or not all(_owned(a, owned) for a in found):
            log.warning("smtp-spoof client=%s auth=%s header=%s", session.client, session.principal_address, field)
            return refusal
    return None


def _owned(address: str, owned: set[str]) -> bool:
    try:
        return normalize_address(address) in owned
    except Invalid:
        return False


def _received(session: SmtpSession, envelope: Envelope, queue_id: str) -> bytes:
    """The trace header of this hop (RFC 5321 §4.4, protocol names of RFC 3848 and RFC 6531)."""
    helo = _HELO_SAFE.sub("", session.helo_name or "unknown")[:255] or "unknown"
    tls = session.tls_details
    base = "UTF8SMTP" if envelope.smtputf8 else ("ESMTP" if session.extended else "SMTP")
    protocol = base + ("S" if tls else "") + ("A" if session.principal_address else "")
    lines = [
        f"Received: from {helo} ([{session.client}])",
        f"\tby {session.server.cfg.hostname} (Relate Mail)",
        f"\twith {protocol} id {queue_id}",
    ]
    if tls:
        lines.append(f"\t({tls})")
    if len(envelope.addresses) == 1:
        # Only a single recipient may be named: more would disclose Bcc recipients.
        lines.append(f"\tfor <{envelope.addresses[0]}>")
    lines[-1] += f"; {_trace_date()}"
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")


_date_cache: tuple[int, str] = (0, "")


def _trace_date() -> str:
    """RFC 5322 date of now for the trace header, formatted once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.format_datetime(email.utils.localtime()))
    return _date_cache[1]


# -- the table -----------------------------------------------------------------------------

_TRANSACTION = frozenset({State.MAIL, State.RCPT})
_IDLE = frozenset({State.FRESH, State.GREETED})

COMMANDS: dict[str, Verb] = {
    verb.name: verb
    for verb in (
        Verb("EHLO", hello, ALL, "RFC 5321 §4.1.1.1", before_tls=True),
        Verb("HELO", hello, ALL, "RFC 5321 §4.1.1.1", before_tls=True),
        Verb("STARTTLS", starttls, _IDLE, "RFC 3207 §4", before_tls=True),
        Verb("AUTH", auth, frozenset({State.GREETED}), "RFC 4954 §4", roles=SUBMISSION),
        Verb("MAIL", mail, frozenset({State.GREETED}), "RFC 5321 §4.1.1.2", needs_auth=True),
        Verb("RCPT", rcpt, _TRANSACTION, "RFC 5321 §4.1.1.3", needs_auth=True),
        Verb("DATA", data, frozenset({State.RCPT}), "RFC 5321 §4.1.1.4", needs_auth=True),
        Verb("RSET", rset, ALL, "RFC 5321 §4.1.1.5"),
        Verb("VRFY", vrfy, ALL, "RFC 5321 §4.1.1.6"),
        Verb("EXPN", expn, ALL, "RFC 5321 §4.1.1.7"),
        Verb("HELP", help_, ALL, "RFC 5321 §4.1.1.8"),
        Verb("NOOP", noop, ALL, "RFC 5321 §4.1.1.9", before_tls=True),
        Verb("QUIT", quit_, ALL, "RFC 5321 §4.1.1.10", before_tls=True),
    )
}
