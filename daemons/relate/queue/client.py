"""Sending to one remote domain over SMTP: hosts in order, STARTTLS, one connection for many messages.

Policy (RFC 5321 §4.2, §5.1):

- Hosts are tried in MX order (each of a host's addresses in turn) until one
  takes the connection; a refused or dropped connection, or a 4xx greeting,
  moves on to the next host. Past the last host every recipient still
  undelivered is deferred.
- STARTTLS is used whenever the server offers it, without checking the
  certificate (opportunistic TLS, RFC 7435); with ``delivery.require_tls`` a
  host that offers no STARTTLS is skipped, and mail waits rather than go in
  clear. A smarthost always gets its configured TLS and a verified
  certificate.
- MTA-STS (RFC 8461 §5, the policy from relate.queue.mtasts; never for a
  smarthost): under an ``enforce`` policy only the MX hosts it lists are
  tried, each only over STARTTLS with a certificate verified for its name;
  when none is left, or none verifies, the mail is deferred with the reason.
  Under ``testing`` the same checks are made and their failures logged, and
  the mail goes as it would without a policy.
- TLS-RPT (RFC 8460): every TLS session, and every session a policy
  refused, is tallied for the domain's daily report (relate.queue.tlsrpt).
- Per recipient: a 2xx to RCPT and then to DATA is sent; a 5xx at RCPT, or
  at DATA for the recipients RCPT accepted, fails them; any 4xx, timeout or
  broken connection defers them.
- One connection carries up to ``delivery.messages_per_connection``
  messages, with RSET between messages that went wrong.

At most one message per connection is ever sent and not yet recorded: each
transaction's results go to the queue (:meth:`Outbox.done`) as soon as its
reply is in, and the next message's final dot (what makes it delivered) waits
until they are committed; its MAIL, RCPT and DATA overlap with that commit. Before each transaction the sender
asks :meth:`Outbox.keep` whether the message is still its to send (the
worker's lease), so a worker that lost its lease stops. A message's bytes are
read just before it is sent, a few at a time within
``delivery.read_ahead_bytes`` (:meth:`Outbox.load`), and dropped once sent.

What goes on the wire is the message's *wire form* (:func:`wire_form`):
every bare CR and bare LF made CRLF and a final CRLF added, exactly what
aiosmtplib's own ``data()`` would make of it (``normalize_message_line_endings``),
so a DKIM signature computed over the wire form is what the receiver
verifies. DATA is sent here rather than by ``aiosmtplib.SMTP.data``, which
rewrites the whole message with two regular expressions on the event loop
(0.5 s for 50 MB); the dot-stuffing of a large message runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import aiosmtplib

from relate.config import DeliveryConfig
from relate.mail.mtasts import Policy
from relate.queue import tlsrpt
from relate.queue.mtasts import MtaSts
from relate.queue.mx import DnsPermanent, DnsTemporary, Host, hosts_for

log = logging.getLogger("relate.delivery")

# Messages up to this size are made wire-ready on the event loop (about 10 ns a byte); larger ones in a thread.
INLINE_BYTES = 256 * 1024
_LINE_ENDS = re.compile(rb"\r\n|\n|\r(?!\n)")  # aiosmtplib's LINE_ENDINGS_REGEX

T = TypeVar("T")


def wire_form(raw: bytes) -> bytes:
    """``raw`` with every line ending CRLF (bare CR and bare LF included) and a final CRLF (RFC 5321 §2.3.8)."""
    crlf = raw.count(b"\r\n")
    if not (crlf == raw.count(b"\r") == raw.count(b"\n")):
        raw = _LINE_ENDS.sub(b"\r\n", raw)
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


def dot_stuffed(wire: bytes) -> bytes:
    """The DATA body of a wire-form message: a dot doubled at the start of every line (RFC 5321 §4.5.2)."""
    stuffed = wire.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


async def off_loop(size: int, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` on the event loop for small inputs, in a worker thread past ``INLINE_BYTES``."""
    if size <= INLINE_BYTES:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


@dataclass
class Message:
    """One message to send to some recipients at one domain."""

    email_id: int
    mail_from: str
    recipients: list[tuple[int, str]]  # (recipient id, address)
    size: int = 0  # the stored size, for reading ahead within delivery.read_ahead_bytes
    data: bytes | None = None  # the wire form, loaded by Outbox.load just before it is sent


@dataclass(frozen=True)
class Result:
    recipient_id: int
    status: str  # sent | deferred | failed
    enhanced: str
    reply: str
    remote_mta: str | None


class Outbox(Protocol):
    """The queue side of one delivery: what may still be sent, its bytes, and where results go."""

    def keep(self, message: Message) -> bool:
        """Drop the recipients no longer ours to send; False when none is left (lease gone, stopping)."""

    async def load(self, messages: Sequence[Message]) -> None:
        """Fill in ``data`` (the wire form, signed) of these messages; left None for one that is gone."""

    async def done(self, results: Sequence[Result]) -> None:
        """Record these results durably; raises when they cannot be (then nothing more may be sent)."""


@dataclass
class _Attempt:
    last_error: str = "no host could be reached"
    pending: asyncio.Future[None] | None = None  # the last transaction's results being recorded
    reported: set[int] = field(default_factory=set)  # message ids whose results went to the outbox


def _enhanced(code: int, text: str) -> str:
    first = text.split(" ", 1)[0]
    parts = first.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and first[0] in "245":
        return first
    return f"{str(code)[0]}.0.0" if str(code)[0] in "245" else "4.0.0"


def _reply_text(code: int, text: str) -> str:
    return " ".join(f"{code} {text}".split())[:500]


def _opportunistic_context() -> ssl.SSLContext:
    # Not ssl.create_default_context(): it loads the system CA store (0.1 s on the event loop) that
    # opportunistic TLS never consults.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@dataclass(frozen=True)
class _Sts:
    """The MTA-STS policy one delivery applies (None: no policy, or mode none)."""

    domain: str
    policy: Policy

    @property
    def enforce(self) -> bool:
        return self.policy.mode == "enforce"


class StsRefused(aiosmtplib.SMTPException):
    """An MX host that an enforce policy rules out (no STARTTLS, or a certificate not verified)."""

    def __init__(self, message: str, result_type: str) -> None:
        super().__init__(message)
        self.result_type = result_type  # RFC 8460 §4.3.2.1, for the TLS report


class DomainSender:
    def __init__(
        self,
        cfg: DeliveryConfig,
        helo: str,
        resolver: object,
        mta_sts: MtaSts | None = None,
        tally: tlsrpt.TlsTally | None = None,
    ) -> None:
        self.cfg = cfg
        self.helo = helo
        self.resolver = resolver
        self.mta_sts = mta_sts
        self.tally = tally
        self._opportunistic = _opportunistic_context()

    def _smarthost_for(self, domain: str) -> bool:
        sh = self.cfg.smarthost
        return bool(sh.host) and (not sh.domains or domain in sh.domains)

    async def send(self, domain: str, messages: Sequence[Message], outbox: Outbox) -> None:
        """Deliver ``messages`` to their recipients at ``domain``; every result goes to ``outbox.done``."""
        attempt = _Attempt()
        try:
            await self._send(domain, messages, outbox, attempt)
        finally:
            if attempt.pending is not None:
                await attempt.pending

    async def _send(self, domain: str, messages: Sequence[Message], outbox: Outbox, attempt: _Attempt) -> None:
        sts: _Sts | None = None
        if self._smarthost_for(domain):
            assert self.cfg.smarthost.host is not None
            hosts = [Host(self.cfg.smarthost.host, [self.cfg.smarthost.host])]
            port = self.cfg.smarthost.port
        else:
            port = self.cfg.port
            if self.mta_sts is not None:
                policy = await self.mta_sts.policy_for(domain)
                sts = _Sts(domain, policy) if policy is not None and policy.mode != "none" else None
            try:
                hosts = await hosts_for(self.resolver, domain)  # type: ignore[arg-type]
            except DnsPermanent as exc:
                await outbox.done(self._all(messages, "failed", exc.enhanced, str(exc), None))
                return
            except DnsTemporary as exc:
                await outbox.done(self._all(messages, "deferred", "4.4.3", str(exc), None))
                return
            if sts is not None:
                hosts = await self._sts_hosts(sts, hosts, messages, outbox)
                if not hosts:
                    return
        remaining = list(messages)
        for host in hosts:
            for address in host.addresses:
                remaining = [m for m in remaining if outbox.keep(m)]
                if not remaining:
                    break
                remaining = await self._via(domain, host.name, address, port, remaining, outbox, attempt, sts)
            if not remaining:
                break
        remaining = [m for m in remaining if m.email_id not in attempt.reported and outbox.keep(m)]
        await self._settle(attempt)
        await outbox.done(self._all(remaining, "deferred", "4.4.1", attempt.last_error, None))
        for message in remaining:
            message.data = None

    async def _sts_hosts(self, sts: _Sts, hosts: list[Host], messages: Sequence[Message], outbox: Outbox) -> list[Host]:
        """RFC 8461 §4.1: the MX hosts the policy lists (enforce; all of them under testing, the others logged).
        None left under enforce: every message is deferred with the reason, and the list is empty."""
        listed = [h for h in hosts if sts.policy.matches(h.name)]
        unlisted = [h.name for h in hosts if not sts.policy.matches(h.name)]
        if not unlisted:
            return hosts
        if self.tally is not None:
            for name in unlisted:
                self.tally.failure(sts.domain, sts.policy.text(), name, tlsrpt.VALIDATION_FAILURE)
        if not sts.enforce:
            log.warning(
                "delivery-mta-sts-testing domain=%s hosts=%s: not in the policy (enforce would not use them)",
                sts.domain,
                ",".join(unlisted),
            )
            return hosts
        if not listed:
            text = f"MTA-STS policy of {sts.domain} (enforce) lists none of its MX hosts ({', '.join(unlisted)})"
            log.warning("delivery-mta-sts-refused domain=%s reason=%r", sts.domain, text)
            await outbox.done(self._all(messages, "deferred", "4.7.5", text, None))
        return listed

    def _all(self, messages: Sequence[Message], status: str, enhanced: str, text: str, mta: str | None) -> list[Result]:
        return [Result(rid, status, enhanced, text, mta) for m in messages for rid, _ in m.recipients]

    async def _report(self, message: Message, results: list[Result], outbox: Outbox, attempt: _Attempt) -> None:
        """Hand one transaction's results to the outbox, overlapping the commit with what comes next."""
        await self._settle(attempt)
        attempt.reported.add(message.email_id)
        message.data = None  # sent or refused: its bytes are not needed again
        attempt.pending = asyncio.ensure_future(outbox.done(results))

    @staticmethod
    async def _settle(attempt: _Attempt) -> None:
        """Wait until the previous transaction's results are recorded (raises if they could not be)."""
        pending, attempt.pending = attempt.pending, None
        if pending is not None:
            await pending

    def _read_ahead(self, messages: list[Message], index: int) -> list[Message]:
        """Messages from ``index`` on not yet loaded, as many as fit in read_ahead_bytes (at least one)."""
        chosen: list[Message] = []
        total = 0
        for message in messages[index:]:
            if message.data is not None:
                continue
            if chosen and total + message.size > self.cfg.read_ahead_bytes:
                break
            chosen.append(message)
            total += message.size
        return chosen

    async def _connect(
        self, domain: str, host: str, address: str, port: int, sts: _Sts | None = None
    ) -> aiosmtplib.SMTP:
        """A connection ready for MAIL; under an MTA-STS policy, over TLS verified for ``host`` (enforce), or
        as without a policy once a failure to verify is logged (testing). TLS results go to the tally."""
        if sts is None:
            client = await self._open(host, address, port)
            tls = client.get_transport_info("sslcontext") is not None
            if self.tally is not None and tls and not self._smarthost_for_host(host):
                self.tally.success(domain, None)
            return client
        try:
            client = await self._open(host, address, port, verify=True)
            if self.tally is not None:
                self.tally.success(domain, sts.policy.text())
            return client
        except StsRefused as exc:
            if self.tally is not None:
                self.tally.failure(domain, sts.policy.text(), host, exc.result_type)
            if sts.enforce:
                log.warning("delivery-mta-sts-refused domain=%s host=%s reason=%r", sts.domain, host, str(exc))
                raise
            log.warning(
                "delivery-mta-sts-testing domain=%s host=%s: enforce would refuse it: %s", sts.domain, host, exc
            )
        return await self._open(host, address, port)

    async def _open(self, host: str, address: str, port: int, *, verify: bool = False) -> aiosmtplib.SMTP:
        smarthost = self._smarthost_for_host(host)
        sh = self.cfg.smarthost
        client = aiosmtplib.SMTP(
            hostname=address,
            port=port,
            local_hostname=self.helo,
            timeout=self.cfg.command_timeout,
            use_tls=smarthost and sh.tls == "tls",
            start_tls=False,
            tls_context=None if smarthost else self._opportunistic,
            validate_certs=smarthost,
        )
        await client.connect(timeout=self.cfg.connect_timeout)
        try:
            await client.ehlo()
            wants_tls = client.supports_extension("starttls")
            if smarthost:
                if sh.tls == "starttls":
                    await client.starttls(server_hostname=host, validate_certs=True)
                    await client.ehlo()  # RFC 3207 §4.2: extensions are learnt again over TLS
                if sh.username:
                    await client.login(sh.username, sh.password or "")
            elif verify:
                await self._verified_starttls(client, host, wants_tls)
            elif wants_tls:
                await client.starttls(server_hostname=host, tls_context=self._opportunistic, validate_certs=False)
                await client.ehlo()
            elif self.cfg.require_tls:
                raise aiosmtplib.SMTPException(f"{host} does not offer STARTTLS and delivery.require_tls is set")
        except BaseException:
            client.close()
            raise
        return client

    async def _verified_starttls(self, client: aiosmtplib.SMTP, host: str, offered: bool) -> None:
        """STARTTLS with the certificate verified for ``host`` (RFC 8461 §4.2); raises StsRefused."""
        assert self.mta_sts is not None
        if not offered:
            raise StsRefused(f"MTA-STS: {host} does not offer STARTTLS", tlsrpt.STARTTLS_NOT_SUPPORTED)
        context = await self.mta_sts.verified_context()
        try:
            await client.starttls(server_hostname=host, tls_context=context, validate_certs=True)
        except (ssl.SSLError, aiosmtplib.SMTPException) as exc:
            reason = getattr(exc, "verify_message", None) or _describe(exc)
            cause = exc if isinstance(exc, ssl.SSLError) else exc.__cause__ or exc
            raise StsRefused(f"MTA-STS: TLS to {host} not verified: {reason}", tlsrpt.result_type(cause)) from None
        await client.ehlo()

    def _smarthost_for_host(self, host: str) -> bool:
        return bool(self.cfg.smarthost.host) and host == self.cfg.smarthost.host

    async def _via(
        self,
        domain: str,
        host: str,
        address: str,
        port: int,
        messages: list[Message],
        outbox: Outbox,
        attempt: _Attempt,
        sts: _Sts | None = None,
    ) -> list[Message]:
        """Send what this host takes; returns the messages still to try elsewhere."""
        try:
            client = await self._connect(domain, host, address, port, sts)
        except (OSError, aiosmtplib.SMTPException, TimeoutError) as exc:
            attempt.last_error = f"{host}[{address}]: {_describe(exc)}"
            log.info("delivery-connect-failed host=%s address=%s error=%s", host, address, _describe(exc))
            return messages
        mta = f"{host}"
        sent = 0
        try:
            for index, message in enumerate(messages):
                if not outbox.keep(message):
                    continue  # no longer ours: another daemon has it, or we are stopping
                if sent and sent % self.cfg.messages_per_connection == 0:
                    with contextlib.suppress(OSError, aiosmtplib.SMTPException, TimeoutError):
                        await client.quit()
                    client.close()
                    try:
                        client = await self._connect(domain, host, address, port, sts)
                    except (OSError, aiosmtplib.SMTPException, TimeoutError) as exc:
                        attempt.last_error = f"{host}[{address}]: {_describe(exc)}"
                        return messages[index:]
                if message.data is None:
                    await outbox.load(self._read_ahead(messages, index))
                if message.data is None:
                    results = self._all([message], "deferred", "4.3.0", "local error: message content not found", None)
                    await self._report(message, results, outbox, attempt)
                    continue
                sent += 1
                try:
                    results = await self._one(client, message, mta, attempt)
                except (OSError, aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, TimeoutError) as exc:
                    attempt.last_error = f"{host}[{address}]: {_describe(exc)}"
                    return messages[index:]  # unknown outcome: tried again elsewhere or deferred, never assumed sent
                await self._report(message, results, outbox, attempt)
            return []
        finally:
            if client.is_connected:
                try:
                    await client.quit()
                except (OSError, aiosmtplib.SMTPException, TimeoutError):
                    client.close()

    async def _one(self, client: aiosmtplib.SMTP, message: Message, mta: str, attempt: _Attempt) -> list[Result]:
        """One transaction: MAIL, a RCPT per recipient, DATA; a result per recipient."""
        assert message.data is not None
        options = ["BODY=8BITMIME"] if client.supports_extension("8bitmime") else []
        if client.supports_extension("size"):
            options.append(f"SIZE={len(message.data)}")
        needs_utf8 = not message.mail_from.isascii() or any(not a.isascii() for _, a in message.recipients)
        if needs_utf8:
            if not client.supports_extension("smtputf8"):
                text = f"{mta} does not support SMTPUTF8 for a non-ASCII address"
                return [Result(rid, "failed", "5.6.7", text, mta) for rid, _ in message.recipients]
            options.append("SMTPUTF8")
        try:
            await client.mail(message.mail_from, options=options, encoding="utf-8")
        except aiosmtplib.SMTPResponseException as exc:
            await _rset(client)
            return [_refused(rid, exc, mta) for rid, _ in message.recipients]
        results: list[Result] = []
        accepted: list[int] = []
        for rid, address in message.recipients:
            try:
                await client.rcpt(address, encoding="utf-8")
                accepted.append(rid)
            except aiosmtplib.SMTPResponseException as exc:
                results.append(_refused(rid, exc, mta))
        if not accepted:
            await _rset(client)
            return results
        try:
            # The previous message's results are committed before this one is complete on the wire.
            response = await _data(client, message.data, lambda: self._settle(attempt))
        except aiosmtplib.SMTPResponseException as exc:
            await _rset(client)
            return results + [_refused(rid, exc, mta) for rid in accepted]
        reply = _reply_text(response.code, response.message)
        enhanced = _enhanced(response.code, response.message)
        return results + [Result(rid, "sent", enhanced, reply, mta) for rid in accepted]


def _refused(rid: int, exc: aiosmtplib.SMTPResponseException, mta: str) -> Result:
    status = "failed" if exc.code >= 500 else "deferred"
    return Result(rid, status, _enhanced(exc.code, exc.message), _reply_text(exc.code, exc.message), mta)


async def _data(
    client: aiosmtplib.SMTP, wire: bytes, before_end: Callable[[], Awaitable[None]]
) -> aiosmtplib.SMTPResponse:
    """DATA (RFC 5321 §4.1.1.4) with the wire form as it is: dot-stuffed, then the final dot.

    ``before_end`` is awaited before the final dot, which is what makes the message delivered; if it
    raises, the connection is dropped instead and the server discards what it got (§4.1.1.4).
    """
    body = await off_loop(len(wire), dot_stuffed, wire)
    response = await client.execute_command(b"DATA")
    if response.code != 354:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    try:
        protocol.write(body)
        try:
            await before_end()
        except BaseException:
            client.close()
            raise
        protocol.write(b".\r\n")
        response = await protocol.read_response(timeout=client.timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        client.close()  # as aiosmtplib's data() does: the connection is out of step now
        raise
    if response.code != 250:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    return response


async def _rset(client: aiosmtplib.SMTP) -> None:
    # A 421 closes the connection (aiosmtplib): the next MAIL finds it gone and the rest goes elsewhere.
    with contextlib.suppress(aiosmtplib.SMTPResponseException, aiosmtplib.SMTPServerDisconnected):
        await client.rset()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _reply_text(exc.code, exc.message)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
