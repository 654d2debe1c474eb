"""One SMTP connection: aiosmtpd's protocol with Relate Mail's policy.

Relay policy, the one that matters most (never an open relay):

- ``mx`` (port 25, unauthenticated): a recipient is accepted only when it is
  a known address or alias at a hosted domain. An unknown address at a
  hosted domain gets ``550 5.1.1``; any other domain ``554 5.7.1``. An
  address that is not a plain ``local@domain`` (quoted local parts, ``%``
  hacks, source routes, address literals, trailing dots, several ``@``) gets
  ``553 5.1.3``. Mail goes to the envelope recipients only, never to header
  addresses. AUTH is not offered.
- ``submission`` (587, STARTTLS required) and ``submissions`` (465, implicit
  TLS): nothing but EHLO, STARTTLS, NOOP and QUIT before TLS, and no MAIL
  before AUTH. MAIL FROM and every From header address must belong to the
  authenticated user (``553``/``550 5.7.1``). Local recipients get the message at once,
  remote ones are queued for the delivery daemon, and a copy goes to the
  user's Sent folder.

Every reply comes from :mod:`relate.smtp.replies`; exceptions are logged in
one line and answered ``451 4.3.0``, never echoed. Each connection logs one
summary line when it ends.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import email.utils
import logging
import re
import secrets
import time
import warnings
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import TYPE_CHECKING, Any, AnyStr

import asyncpg
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from relate.auth import AuthRefused
from relate.delivery import Delivery, Kind, Recipient, Sender, classify
from relate.errors import Invalid
from relate.mail.address import normalize_address, plain_path
from relate.mail.mime import parse_message
from relate.smtp import replies
from relate.smtp.data import DataState, read_data
from relate.smtp.replies import Reply
from relate.store.accounts import user_addresses

if TYPE_CHECKING:
    from relate.smtp.server import SmtpServer

log = logging.getLogger("relate.smtp")

_HELO_SAFE = re.compile(r"[^A-Za-z0-9.\-\[\]:_]")
_RECV_SIZE = 64 * 1024
_date_cache: tuple[int, str] = (0, "")


def _trace_date() -> str:
    """RFC 5322 date of now for the trace header, formatted once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.format_datetime(email.utils.localtime()))
    return _date_cache[1]


class RelateEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.recipients: list[Recipient] = []


def _reply(reply: Reply) -> str:
    return str(reply)


class SmtpSession(SMTP):
    """Per-connection state; transaction state lives in :class:`RelateEnvelope`."""

    def __init__(self, server: SmtpServer, role: str) -> None:
        cfg = server.cfg.smtp
        # Set before aiosmtpd builds its StreamReader with this limit.
        self.line_length_limit = cfg.max_line_length
        self.relate = server
        self.role = role
        self.implicit_tls = role == "submissions"
        tls = server.tls_for(role)
        with warnings.catch_warnings():
            # aiosmtpd warns that AUTH without its own TLS requirement is unsafe; on 465
            # the socket is TLS before the first byte, so the warning does not apply.
            warnings.simplefilter("ignore", UserWarning)
            super().__init__(
                Handler(server, self),
                data_size_limit=cfg.max_message_size,
                enable_SMTPUTF8=True,
                hostname=server.cfg.hostname,
                ident="Relate Mail ESMTP",
                tls_context=None if (tls is None or self.implicit_tls) else tls.context,
                require_starttls=role == "submission",
                timeout=cfg.command_timeout,
                auth_required=role != "mx",
                # On 465 the whole connection is TLS already; aiosmtpd only knows about STARTTLS.
                auth_require_tls=not self.implicit_tls,
            )
        # aiosmtpd keeps these on the class, shared by every connection; keep ours apart.
        self.command_size_limits = collections.defaultdict(lambda: max(512, cfg.max_line_length))
        self.client = "-"
        self.principal_address: str | None = None
        self.principal_id: int | None = None
        self.started = time.monotonic()
        self._deadline = 0.0
        self.counted = False
        self.in_data = False
        self.greeting = False
        self.tls_version: str | None = None
        self.tls_details: str | None = None  # for the trace header
        self.messages = 0
        self.recipient_count = 0
        self.bytes_in = 0
        self.last_sender = "-"
        self.last_result = "-"

    # -- connection lifecycle ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.counted:
            peer = transport.get_extra_info("peername")
            self.client = str(peer[0]) if peer else "-"
            refusal = self.relate.admit(self.client)
            if refusal is not None:
                assert isinstance(transport, asyncio.Transport)
                transport.write(f"{refusal}\r\n".encode())
                transport.close()
                log.warning("smtp-refused client=%s role=%s reply=%s", self.client, self.role, refusal.enhanced)
                return
            self.counted = True
            self.relate.sessions.add(self)
        super().connection_made(transport)
        if hasattr(transport, "max_size"):
            # asyncio's socket transport allocates max_size (256 KiB) for every recv(), which glibc
            # serves with mmap: a few KiB per command cost far more than the bytes read.
            transport.max_size = _RECV_SIZE
        # Called again after STARTTLS with the TLS transport; remember what was negotiated.
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            cipher = ssl_object.cipher()
            self.tls_version = ssl_object.version()
            self.tls_details = f"version={self.tls_version} cipher={cipher[0]} bits={cipher[2]}" if cipher else None

    def connection_lost(self, error: Exception | None) -> None:
        if not self.counted:
            return
        self.counted = False
        self.relate.release(self.client)
        self.relate.sessions.discard(self)
        log.info(
            "smtp-session client=%s role=%s tls=%s auth=%s from=%s messages=%d rcpts=%d size=%d result=%s seconds=%.2f",
            self.client,
            self.role,
            self.tls_version or "-",
            self.principal_address or "-",
            self.last_sender,
            self.messages,
            self.recipient_count,
            self.bytes_in,
            self.last_result,
            time.monotonic() - self.started,
        )
        super().connection_lost(error)

    # One timer per connection: a command only moves the deadline, and the timer, when it fires
    # early, sets itself again for the deadline (aiosmtpd makes and cancels a timer per command).
    def _reset_timeout(self, duration: float | None = None) -> None:
        self._deadline = self.loop.time() + (duration or self._timeout_duration)
        handle = self._timeout_handle
        if handle is None or handle.cancelled() or handle.when() > self._deadline:
            if handle is not None:
                handle.cancel()
            self._timeout_handle = self.loop.call_at(self._deadline, self._timeout_cb)

    def _timeout_cb(self) -> None:
        if self.loop.time() < self._deadline:
            self._timeout_handle = self.loop.call_at(self._deadline, self._timeout_cb)
            return
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # RFC 5321 §4.1.2 source routes (<@relay:user@domain>) are refused, not silently dropped.
        if arg.lstrip().startswith("<@"):
            return None, None
        plain = plain_path(arg)
        if plain is not None and not (
            self.local_part_limit and len(plain[0].rpartition("@")[0]) > self.local_part_limit
        ):
            return plain
        result: tuple[str | None, str | None] = super()._getaddr(arg)
        return result

    def _create_envelope(self) -> RelateEnvelope:
        return RelateEnvelope()

    async def push(self, status: AnyStr) -> None:
        # The one place every reply passes: aiosmtpd's own texts become catalogue replies.
        # RFC 2034 §3: no enhanced codes on the greeting and the HELO/EHLO replies.
        if isinstance(status, str) and not self.greeting:
            await super().push(replies.normalize(status))
        else:
            await super().push(status)

    # -- commands with Relate Mail's rules -----------------------------------

    async def _handle_client(self) -> None:
        # A client that goes away is not an error; connection_lost logs the session.
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await super()._handle_client()

    async def smtp_EHLO(self, hostname: str) -> None:
        self.greeting = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self.greeting = False

    async def smtp_HELO(self, hostname: str) -> None:
        self.greeting = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self.greeting = False

    def _tls_started(self) -> bool:
        return self._tls_protocol is not None

    async def smtp_STARTTLS(self, arg: str) -> None:
        # RFC 3207 §4.2: no second STARTTLS inside TLS (and none on 465, which is TLS already).
        if self._tls_protocol is not None or self.implicit_tls:
            await self.push(_reply(replies.BAD_SEQUENCE))
            return
        await super().smtp_STARTTLS(arg)
        if self._tls_started() and self.tls_version is None:
            # The handshake was abandoned (asyncio gives up without connection_lost): release the slot.
            self.connection_lost(None)

    async def smtp_AUTH(self, arg: str) -> None:
        # RFC 4954 is for submission only; an MX offers no AUTH.
        if self.role == "mx":
            await self.push(_reply(replies.NOT_IMPLEMENTED))
            return
        if self.role == "submission" and self.tls_version is None:
            await self.push(_reply(replies.ENCRYPTION_REQUIRED))
            return
        await super().smtp_AUTH(arg)

    # RFC 5321 §4.1.1.4 (DATA); replaces aiosmtpd's, which reads the data line by line (see relate.smtp.data).
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        # RFC 5321 §4.5.3.2: the whole DATA transfer gets the (longer) data timeout.
        self._reset_timeout(self.relate.cfg.smtp.data_timeout)
        self.in_data = True
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            try:
                data = await read_data(self._reader, size_limit=self.data_size_limit, line_limit=self.line_length_limit)
            except asyncio.CancelledError:
                # The connection went away mid-data: nothing is stored.
                self._writer.close()
                raise
            if data.state is DataState.TOO_LONG:
                await self.push(_reply(replies.LINE_TOO_LONG))
            elif data.state is DataState.TOO_MUCH:
                await self.push(_reply(replies.TOO_BIG))
            else:
                self.envelope.content = data.content
                self.envelope.original_content = data.content
                status = await self._call_handler_hook("DATA")
                self.envelope = self._create_envelope()
                await self.push(status)
                return
            self.envelope = self._create_envelope()
        finally:
            self.in_data = False
            if self.transport is not None:
                self._reset_timeout()

    async def smtp_VRFY(self, arg: str) -> None:
        # RFC 5321 §3.5.3: 252 without confirming anything (no address harvesting).
        await self.push("252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery")

    async def smtp_EXPN(self, arg: str) -> None:
        await self.push(_reply(replies.NOT_IMPLEMENTED))

    # RFC 4954 §4 (AUTH), RFC 4616 (PLAIN); replaces aiosmtpd's, whose authenticator hook cannot await.
    async def auth_PLAIN(self, _server: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            response = await self.challenge_auth("")
            if not isinstance(response, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                response = base64.b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await self.push(_reply(replies.BAD_BASE64))
                return AuthResult(success=False, handled=True)
        parts = response.split(b"\x00")
        if len(parts) != 3:
            await self.push(_reply(replies.BAD_BASE64))
            return AuthResult(success=False, handled=True)
        authzid, login, password = parts
        if authzid and authzid != login:
            password = b""  # acting as another user is not supported: fails, and is logged, as a bad key
        return await self._check_login(login, password)

    # draft-murchison-sasl-login: username and password, each in its own challenge.
    async def auth_LOGIN(self, _server: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await self.challenge_auth("Username:")
            if not isinstance(login, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                login = base64.b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await self.push(_reply(replies.BAD_BASE64))
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth("Password:")
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)
        return await self._check_login(login, password)

    async def _check_login(self, login: bytes, password: bytes) -> AuthResult:
        try:
            principal = await self.relate.authenticator.authenticate(
                login.decode("utf-8", "replace"),
                password.decode("utf-8", "replace"),
                "smtp",
                client=self.client,
                service="smtp",
            )
        except AuthRefused:
            return AuthResult(success=False, handled=False, message=_reply(replies.AUTH_FAILED))
        except (OSError, asyncpg.PostgresError, TimeoutError):
            log.warning("smtp-auth-tempfail client=%s", self.client)
            return AuthResult(success=False, handled=False, message=_reply(replies.AUTH_TEMPFAIL))
        self.principal_address = principal.address
        self.principal_id = principal.user_id
        return AuthResult(success=True, auth_data=principal, message=_reply(replies.AUTH_OK))


class Handler:
    """aiosmtpd's hooks for one connection: recipient policy and the delivery transaction."""

    def __init__(self, server: SmtpServer, session: SmtpSession) -> None:
        self.server = server
        self.smtp = session

    # RFC 5321 §4.1.1.1 (EHLO); RFC 2920 PIPELINING, RFC 2034 ENHANCEDSTATUSCODES.
    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        lines = [r for r in responses if not (self.smtp.role == "mx" and r.startswith("250-AUTH"))]
        return [*lines[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", lines[-1]]

    # RFC 5321 §4.1.1.2 (MAIL), RFC 1870 SIZE, RFC 6531 SMTPUTF8.
    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: RelateEnvelope, address: str, mail_options: list[str]
    ) -> str:
        if self.smtp.role != "mx":
            owned = await self._owned_addresses()
            try:
                sender = normalize_address(address)
            except Invalid:
                return _reply(replies.SENDER_NOT_OWNED)
            if sender not in owned:
                log.warning(
                    "smtp-spoof client=%s auth=%s mail_from=%s", self.smtp.client, self.smtp.principal_address, sender
                )
                return _reply(replies.SENDER_NOT_OWNED)
            address = sender
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.smtp_utf8 = "SMTPUTF8" in (o.upper() for o in mail_options)
        self.smtp.last_sender = f"<{address}>"
        return _reply(replies.SENDER_OK)

    # RFC 5321 §4.1.1.3 (RCPT); the relay policy in the module docstring.
    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: RelateEnvelope, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.server.cfg.smtp.max_recipients:
            return _reply(replies.TOO_MANY_RECIPIENTS)
        try:
            normalized = normalize_address(address)
        except Invalid:
            return _reply(replies.BAD_ADDRESS)
        try:
            recipient = await classify(self.server.pool, normalized)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("smtp-tempfail client=%s stage=rcpt error=%s", self.smtp.client, type(exc).__name__)
            return _reply(replies.TEMPFAIL)
        if recipient.kind is Kind.UNKNOWN:
            return _reply(replies.UNKNOWN_USER)
        if recipient.kind is Kind.REMOTE and self.smtp.role == "mx":
            log.info("smtp-relay-denied client=%s rcpt=%s", self.smtp.client, normalized)
            return _reply(replies.RELAY_DENIED)
        envelope.rcpt_tos.append(normalized)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.recipients.append(recipient)
        return _reply(replies.RECIPIENT_OK)

    # RFC 5321 §4.1.1.4 (DATA): 250 only once the transaction has committed.
    async def handle_DATA(self, server: SMTP, session: Session, envelope: RelateEnvelope) -> str:
        content = envelope.original_content or b""
        smtp = self.smtp
        smtp.messages += 1
        smtp.bytes_in += len(content)
        smtp.recipient_count += len(envelope.recipients)
        sender = None
        if smtp.role != "mx":
            if not await self._from_header_owned(content):
                smtp.last_result = "550"
                return _reply(replies.FROM_NOT_OWNED)
            assert smtp.principal_id is not None
            assert smtp.principal_address is not None
            sender = Sender(smtp.principal_id, smtp.principal_address)
        queue_id = secrets.token_hex(6)
        # aiosmtpd reports the null sender as "<>"; the trace and the queue want "".
        mail_from = "" if envelope.mail_from in (None, "<>") else envelope.mail_from
        delivery = Delivery(self.server.pool, mail_from, sender=sender)
        for recipient in envelope.recipients:
            delivery.add(recipient)
        trace = self._received(envelope, queue_id)
        try:
            committed = await delivery.commit(content, trace=trace)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("smtp-tempfail client=%s stage=data error=%s", smtp.client, type(exc).__name__)
            smtp.last_result = "451"
            return _reply(replies.TEMPFAIL)
        parsed = committed.parsed
        if parsed is not None:
            sender_text = parsed.from_[0].email if parsed.from_ else None
            for stored in committed.local:
                self.server.notifier.new_email(
                    mailbox_id=stored.mailbox_id, email_id=stored.id, sender=sender_text, subject=parsed.subject
                )
        smtp.last_result = "250"
        log.info(
            "smtp-accepted id=%s client=%s from=<%s> rcpts=%d local=%d remote=%d size=%d",
            queue_id,
            smtp.client,
            envelope.mail_from,
            len(envelope.recipients),
            len(committed.local),
            len(delivery.remote),
            len(content),
        )
        return str(replies.QUEUED.with_text(f"Message accepted as {queue_id}"))

    async def handle_exception(self, error: Exception) -> str:
        log.error("smtp-error client=%s error=%s: %s", self.smtp.client, type(error).__name__, error)
        self.smtp.last_result = "451"
        return _reply(replies.TEMPFAIL)

    async def _owned_addresses(self) -> set[str]:
        assert self.smtp.principal_id is not None
        return await user_addresses(self.server.pool, self.smtp.principal_id)

    async def _from_header_owned(self, content: bytes) -> bool:
        """Every From address must be the user's (RFC 5322 §3.6.2); none at all, or a malformed From, is refused.

        The header is read by the standard library and by the parser whose
        result mail clients are shown; any address either of them finds must
        be the user's, so no ambiguous From can display someone else.
        """
        cut = content.find(b"\r\n\r\n")
        head = content if cut < 0 else content[: cut + 4]
        headers = BytesHeaderParser(policy=default_policy).parsebytes(head)
        fields = headers.get_all("From", [])
        if any(getattr(f, "defects", None) for f in fields):
            return False
        found = {addr for _, addr in email.utils.getaddresses([str(v) for v in fields]) if addr}
        found |= {a.email for a in parse_message(head).from_ if a.email}
        if not found:
            return False
        owned = await self._owned_addresses()
        for addr in found:
            try:
                if normalize_address(addr) not in owned:
                    return False
            except Invalid:
                return False
        return True

    def _received(self, envelope: RelateEnvelope, queue_id: str) -> bytes:
        """The trace header of this hop (RFC 5321 §4.4, protocol names of RFC 3848 and RFC 6531)."""
        smtp = self.smtp
        helo = _HELO_SAFE.sub("", smtp.session.host_name or "unknown")[:255] if smtp.session else "unknown"
        tls = smtp.tls_details
        extended = smtp.session is not None and smtp.session.extended_smtp
        base = "UTF8SMTP" if envelope.smtp_utf8 else ("ESMTP" if extended else "SMTP")
        protocol = base + ("S" if tls else "") + ("A" if smtp.principal_address else "")
        lines = [
            f"Received: from {helo} ([{smtp.client}])",
            f"\tby {self.server.cfg.hostname} (Relate Mail)",
            f"\twith {protocol} id {queue_id}",
        ]
        if tls:
            lines.append(f"\t({tls})")
        if len(envelope.rcpt_tos) == 1:
            # Only a single recipient may be named: more would disclose Bcc recipients.
            lines.append(f"\tfor <{envelope.rcpt_tos[0]}>")
        lines[-1] += f"; {_trace_date()}"
        return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")
