"""The POP3 error taxonomy; the session loop turns each into its wire form (and a log line) in one place.

RFC 1939 has one failure reply, ``-ERR text``. RFC 2449 §8 adds response codes
in brackets, announced by CAPA (RESP-CODES, AUTH-RESP-CODE): ``[IN-USE]``
(§8.1.1, the maildrop is locked), ``[SYS/TEMP]`` and ``[SYS/PERM]`` (RFC 3206
§4: a server failure, temporary or not) and ``[AUTH]`` (RFC 3206 §5: the
credentials were refused). What the client reads stays short; the log gets the
detail.
"""

from __future__ import annotations

from relate.errors import MailboxGone
from relate.store import db


class Pop3Error(Exception):
    """A command failed: ``-ERR [code] text``. ``text`` goes to the client, so it stays short."""

    code: str | None = None

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    @property
    def line(self) -> str:
        return f"-ERR [{self.code}] {self.text}" if self.code else f"-ERR {self.text}"


class Refused(Pop3Error):
    """A command understood and refused, without a response code: no such message, TLS not available."""


class ParseError(Pop3Error):
    """The parser refused the line.

    Without ``verb``, the line is no command at all (not text, an unknown verb, too long) and counts
    towards ``pop3.max_bad_commands``. With it, the verb is known and its arguments are wrong: the
    answer comes after the state check, and does not count.
    """

    def __init__(self, text: str, verb: str | None = None, code: str | None = None) -> None:
        super().__init__(text)
        self.verb = verb
        self.code = code


class InUse(Pop3Error):
    """Another session, on any host, holds the maildrop (RFC 2449 §8.1.1)."""

    code = "IN-USE"


class AuthFailed(Pop3Error):
    """The login was refused: wrong key, no pop3 scope, locked out, or a login before TLS (RFC 3206 §5)."""

    code = "AUTH"


class TempFail(Pop3Error):
    """The server cannot do it now; trying again later may work (RFC 3206 §4)."""

    code = "SYS/TEMP"


class PermFail(Pop3Error):
    """The server will not be able to do it (RFC 3206 §4): the maildrop is gone."""

    code = "SYS/PERM"


class ClientGone(Exception):
    """The client went away, stopped reading, or failed its TLS handshake: the session ends quietly."""


#: Failures of the server's side that pass: the database down, refusing connections or slow (pool.acquire()
#: times out after database.acquire_timeout), a connection lost (store/db.py's UNAVAILABLE). Answered
#: ``-ERR [SYS/TEMP]``, logged in one line. OSError covers the database's sockets: the client's are wrapped
#: in ClientGone where they are used.
TEMPORARY: tuple[type[BaseException], ...] = db.UNAVAILABLE

#: The maildrop was removed during the session (the user deleted): ``-ERR [SYS/PERM]``.
GONE: tuple[type[BaseException], ...] = (MailboxGone,)
