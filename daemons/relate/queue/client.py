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
- Per recipient: a 2xx to RCPT and then to DATA is sent; a 5xx at RCPT, or
  at DATA for the recipients RCPT accepted, fails them; any 4xx, timeout or
  broken connection defers them.
- One connection carries up to ``delivery.messages_per_connection``
  messages, with RSET between messages that went wrong.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiosmtplib

from relate.config import DeliveryConfig
from relate.queue.mx import DnsPermanent, DnsTemporary, Host, hosts_for

log = logging.getLogger("relate.delivery")


@dataclass
class Message:
    """One message to send to some recipients at one domain."""

    email_id: int
    mail_from: str
    data: bytes
    recipients: list[tuple[int, str]]  # (recipient id, address)


@dataclass(frozen=True)
class Result:
    recipient_id: int
    status: str  # sent | deferred | failed
    enhanced: str
    reply: str
    remote_mta: str | None


@dataclass
class _Attempt:
    results: dict[int, Result] = field(default_factory=dict)
    last_error: str = "no host could be reached"


def _enhanced(code: int, text: str) -> str:
    first = text.split(" ", 1)[0]
    parts = first.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and first[0] in "245":
        return first
    return f"{str(code)[0]}.0.0" if str(code)[0] in "245" else "4.0.0"


def _reply_text(code: int, text: str) -> str:
    return " ".join(f"{code} {text}".split())[:500]


def _opportunistic_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class DomainSender:
    def __init__(self, cfg: DeliveryConfig, helo: str, resolver: object) -> None:
        self.cfg = cfg
        self.helo = helo
        self.resolver = resolver
        self._opportunistic = _opportunistic_context()

    def _smarthost_for(self, domain: str) -> bool:
        sh = self.cfg.smarthost
        return bool(sh.host) and (not sh.domains or domain in sh.domains)

    async def send(self, domain: str, messages: Sequence[Message]) -> list[Result]:
        """Deliver ``messages`` to their recipients at ``domain``; one result per recipient."""
        attempt = _Attempt()
        if self._smarthost_for(domain):
            assert self.cfg.smarthost.host is not None
            hosts = [Host(self.cfg.smarthost.host, [self.cfg.smarthost.host])]
            port = self.cfg.smarthost.port
        else:
            port = self.cfg.port
            try:
                hosts = await hosts_for(self.resolver, domain)  # type: ignore[arg-type]
            except DnsPermanent as exc:
                return self._all(messages, "failed", exc.enhanced, str(exc), None)
            except DnsTemporary as exc:
                return self._all(messages, "deferred", "4.4.3", str(exc), None)
        remaining = list(messages)
        for host in hosts:
            for address in host.addresses:
                if not remaining:
                    break
                remaining = await self._via(host.name, address, port, remaining, attempt)
            if not remaining:
                break
        results = list(attempt.results.values())
        for message in remaining:
            for rid, _ in message.recipients:
                if rid not in attempt.results:
                    results.append(Result(rid, "deferred", "4.4.1", attempt.last_error, None))
        return results

    def _all(self, messages: Sequence[Message], status: str, enhanced: str, text: str, mta: str | None) -> list[Result]:
        return [Result(rid, status, enhanced, text, mta) for m in messages for rid, _ in m.recipients]

    async def _connect(self, host: str, address: str, port: int) -> aiosmtplib.SMTP:
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
            elif wants_tls:
                await client.starttls(server_hostname=host, tls_context=self._opportunistic, validate_certs=False)
                await client.ehlo()
            elif self.cfg.require_tls:
                raise aiosmtplib.SMTPException(f"{host} does not offer STARTTLS and delivery.require_tls is set")
        except BaseException:
            client.close()
            raise
        return client

    def _smarthost_for_host(self, host: str) -> bool:
        return bool(self.cfg.smarthost.host) and host == self.cfg.smarthost.host

    async def _via(
        self, host: str, address: str, port: int, messages: list[Message], attempt: _Attempt
    ) -> list[Message]:
        """Send what this host takes; returns the messages still to try elsewhere."""
        try:
            client = await self._connect(host, address, port)
        except (OSError, aiosmtplib.SMTPException, TimeoutError) as exc:
            attempt.last_error = f"{host}[{address}]: {_describe(exc)}"
            log.info("delivery-connect-failed host=%s address=%s error=%s", host, address, _describe(exc))
            return messages
        mta = f"{host}"
        try:
            for index, message in enumerate(messages):
                if index and index % self.cfg.messages_per_connection == 0:
                    with contextlib.suppress(OSError, aiosmtplib.SMTPException, TimeoutError):
                        await client.quit()
                    client.close()
                    try:
                        client = await self._connect(host, address, port)
                    except (OSError, aiosmtplib.SMTPException, TimeoutError) as exc:
                        attempt.last_error = f"{host}[{address}]: {_describe(exc)}"
                        return messages[index:]
                try:
                    await self._one(client, message, mta, attempt)
                except (OSError, aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, TimeoutError) as exc:
                    attempt.last_error = f"{host}[{address}]: {_describe(exc)}"
                    for rid, _ in message.recipients:
                        attempt.results.pop(rid, None)  # unknown outcome: defer, never assume sent
                    return messages[index:]
            return []
        finally:
            if client.is_connected:
                try:
                    await client.quit()
                except (OSError, aiosmtplib.SMTPException, TimeoutError):
                    client.close()

    async def _one(self, client: aiosmtplib.SMTP, message: Message, mta: str, attempt: _Attempt) -> None:
        """One transaction: MAIL, a RCPT per recipient, DATA."""
        options = ["BODY=8BITMIME"] if client.supports_extension("8bitmime") else []
        if client.supports_extension("size"):
            options.append(f"SIZE={len(message.data)}")
        needs_utf8 = not message.mail_from.isascii() or any(not a.isascii() for _, a in message.recipients)
        if needs_utf8:
            if not client.supports_extension("smtputf8"):
                for rid, _ in message.recipients:
                    attempt.results[rid] = Result(
                        rid, "failed", "5.6.7", f"{mta} does not support SMTPUTF8 for a non-ASCII address", mta
                    )
                return
            options.append("SMTPUTF8")
        try:
            await client.mail(message.mail_from, options=options, encoding="utf-8")
        except aiosmtplib.SMTPResponseException as exc:
            status = "failed" if exc.code >= 500 else "deferred"
            for rid, _ in message.recipients:
                attempt.results[rid] = Result(
                    rid, status, _enhanced(exc.code, exc.message), _reply_text(exc.code, exc.message), mta
                )
            await _rset(client)
            return
        accepted: list[int] = []
        for rid, address in message.recipients:
            try:
                await client.rcpt(address, encoding="utf-8")
                accepted.append(rid)
            except aiosmtplib.SMTPResponseException as exc:
                status = "failed" if exc.code >= 500 else "deferred"
                attempt.results[rid] = Result(
                    rid, status, _enhanced(exc.code, exc.message), _reply_text(exc.code, exc.message), mta
                )
        if not accepted:
            await _rset(client)
            return
        try:
            response = await client.data(message.data)
        except aiosmtplib.SMTPResponseException as exc:
            status = "failed" if exc.code >= 500 else "deferred"
            for rid in accepted:
                attempt.results[rid] = Result(
                    rid, status, _enhanced(exc.code, exc.message), _reply_text(exc.code, exc.message), mta
                )
            await _rset(client)
            return
        for rid in accepted:
            attempt.results[rid] = Result(
                rid,
                "sent",
                _enhanced(response.code, response.message),
                _reply_text(response.code, response.message),
                mta,
            )


async def _rset(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(aiosmtplib.SMTPResponseException):
        await client.rset()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _reply_text(exc.code, exc.message)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
