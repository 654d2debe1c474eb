"""The SMTP daemon's errors: each carries the catalogue reply the client gets.

The session loop is the one place that turns them into a reply (and, where
it says so, a log line); handlers and the parser only raise them.
"""

from __future__ import annotations

from relate.smtp.replies import Reply


class SmtpError(Exception):
    """A refusal: the client gets ``reply`` and the session goes on."""

    def __init__(self, reply: Reply, detail: str = "") -> None:
        super().__init__(detail or reply.text)
        self.reply = reply
        self.detail = detail  # for the log, never for the client


class ParseError(SmtpError):
    """A command line the grammar does not allow (500, 501, 553, 555)."""


class Hangup(Exception):
    """End the session now: ``reply`` (if any) is sent, then the connection is closed."""

    def __init__(self, reply: Reply | None = None) -> None:
        super().__init__(reply.text if reply else "hang up")
        self.reply = reply
