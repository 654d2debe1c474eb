"""rspamd's HTTP protocol: ``POST /checkv2`` on the normal worker, ``/learnspam`` and ``/learnham`` on the controller.

Policy:

- The message goes as the request body (streamed from its spool once that
  is on disk) with its length declared; the envelope goes in request headers (rspamd's protocol
  page): ``From`` (MAIL FROM), one ``Rcpt`` per recipient, ``IP``, ``Helo``,
  ``User`` (an authenticated sender), ``Queue-Id``. ``Hostname`` (the
  client's name from reverse DNS) is not sent: we do not resolve it, and
  sending a made-up one would make rspamd score a missing rDNS as present.
- Every call has ``smtp.rspamd.timeout`` in all (connect, send, answer). The
  answer is read up to ``MAX_ANSWER`` bytes; a longer one, one that is not
  the JSON object rspamd sends, or an action we do not know, is treated as
  rspamd being unreachable: the caller decides (:mod:`relate.spam.filter`).
- Learning: ``success: true`` is learnt; an answer saying the message was
  learnt already (rspamd's learn cache) counts as learnt too, so a message
  moved to Junk, out and back again costs rspamd no second lesson.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDict

from relate.config import RspamdConfig
from relate.mail.spool import Spool

MAX_ANSWER = 256 * 1024  # bytes of JSON read from rspamd; its answer for one message is a few KiB
MAX_SYMBOLS = 200  # symbols kept of an answer (the rest are left out of the headers and the REST detail)
MAX_SUBJECT = 2000  # characters of the subject rspamd gives for "rewrite subject" (a longer one is not used)
ACTIONS = ("reject", "soft reject", "rewrite subject", "add header", "greylist", "no action")


Chunk = bytes | memoryview


class Unreachable(Exception):
    """rspamd could not be asked, or its answer could not be read."""


@dataclass(frozen=True)
class Envelope:
    """What rspamd is told of the SMTP transaction besides the message."""

    client: str
    helo: str
    mail_from: str
    recipients: list[str]
    queue_id: str
    user: str | None = None  # the authenticated sender (submission)


@dataclass(frozen=True)
class Result:
    action: str  # one of ACTIONS
    score: float
    required: float
    symbols: list[tuple[str, float]] = field(default_factory=list)  # by name
    subject: str | None = None  # the new Subject rspamd gives with "rewrite subject"


def parse_answer(data: bytes) -> Result:
    """The check's answer (``/checkv2``'s JSON); raises Unreachable when it is not one."""
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise Unreachable(f"answer is not JSON: {exc}") from None
    except RecursionError:  # arrays or objects nested thousands deep (json recurses per level)
        raise Unreachable("answer nested too deep") from None
    if not isinstance(body, dict):
        raise Unreachable("answer is not a JSON object")
    action = body.get("action")
    if action not in ACTIONS:
        raise Unreachable(f"unknown action {str(action)[:40]!r}")
    score = _number(body.get("score"))
    required = _number(body.get("required_score"))
    symbols: list[tuple[str, float]] = []
    found = body.get("symbols")
    if isinstance(found, dict):
        for name, entry in list(found.items())[:MAX_SYMBOLS]:
            value = _number(entry.get("score")) if isinstance(entry, dict) else 0.0
            if isinstance(name, str) and name.isprintable() and len(name) <= 100:
                symbols.append((name, value))
    subject = body.get("subject")
    if not isinstance(subject, str) or len(subject) > MAX_SUBJECT:
        subject = None
    return Result(str(action), score, required, sorted(symbols), subject)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0.0
    return float(value)


class Rspamd:
    """One client per process: its connection pool is shared by every check and every lesson."""

    def __init__(self, cfg: RspamdConfig) -> None:
        self.cfg = cfg
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.cfg.timeout)
            self._session = aiohttp.ClientSession(timeout=timeout, raise_for_status=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, url: str, headers: CIMultiDict[str], body: bytes | AsyncIterator[Chunk]) -> bytes:
        try:
            async with self._client().post(url, data=body, headers=headers) as response:
                answer = await response.content.read(MAX_ANSWER + 1)
                if len(answer) > MAX_ANSWER:
                    raise Unreachable(f"answer longer than {MAX_ANSWER} bytes")
                if response.status != 200:
                    raise Unreachable(f"HTTP {response.status}: {answer[:200].decode('utf-8', 'replace')}")
                return answer
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from None

    async def check(self, message: Spool, envelope: Envelope) -> Result:
        """rspamd's verdict on the message; raises Unreachable."""
        headers: CIMultiDict[str] = CIMultiDict()
        headers["Content-Length"] = str(message.size)
        headers["From"] = envelope.mail_from or "<>"  # the null reverse-path, as MTAs hand it to rspamd
        for rcpt in envelope.recipients:
            headers.add("Rcpt", rcpt)
        headers["IP"] = envelope.client
        if envelope.helo:
            headers["Helo"] = envelope.helo
        headers["Queue-Id"] = envelope.queue_id
        if envelope.user:
            headers["User"] = envelope.user
        # A spool still in memory (up to 256 KiB) goes as one bytes object; one on disk is streamed from it.
        body = message.chunks() if message.on_disk else await message.read()
        return parse_answer(await self._post((self.cfg.url or "").rstrip("/") + "/checkv2", headers, body))

    async def learn(self, kind: str, message: bytes) -> None:
        """Teach rspamd's controller that ``message`` is ``kind`` (spam or ham); raises Unreachable when it
        could not (an answer saying it was learnt already is a success)."""
        assert kind in ("spam", "ham")
        headers: CIMultiDict[str] = CIMultiDict()
        if self.cfg.password:
            headers["Password"] = self.cfg.password
        url = (self.cfg.controller_url or "").rstrip("/") + f"/learn{kind}"
        try:
            answer = await self._post(url, headers, message)
        except Unreachable as exc:
            if "already learned" in str(exc) or "already learnt" in str(exc):
                return  # the learn cache: rspamd knows this message as this kind
            raise
        try:
            body = json.loads(answer)
        except ValueError:
            raise Unreachable("learn answer is not JSON") from None
        if not isinstance(body, dict) or body.get("success") is not True:
            error = str(body.get("error", body))[:200] if isinstance(body, dict) else "not an object"
            if "already learned" in error:
                return
            raise Unreachable(f"not learnt: {error}")
