"""POP3 command handlers, one per verb, and the table of them: verb, handler, the states allowing it, RFC.

A handler answers at once and returns None, or returns what it still has to
wait for (the database, the client); either way its failures reach the
session's one error handler (``Pop3Session._failed``). :data:`COMMANDS` has
an entry for every verb of the parser's grammar (a test checks), and
:data:`ALLOWED`, the verbs each state allows, is derived from it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from relate.auth import AuthRefused
from relate.pop3 import parser, responses
from relate.pop3.errors import AuthFailed, Refused
from relate.pop3.maildrop import Message
from relate.pop3.parser import Auth, Bare, Listing, Numbered, Pass, Top, User
from relate.pop3.session import AUTHORIZATION, TRANSACTION, UPDATE, Handler, Pop3Session


# RFC 2449 §5 (CAPA)
def capa(session: Pop3Session, cmd: Bare) -> None:
    caps = list(responses.CAPABILITIES)
    if session.state == AUTHORIZATION:
        if session.tls or session.cfg.allow_plaintext_auth:
            caps += ["USER", "SASL PLAIN"]
        if not session.tls and session.server.tls_for("pop3") is not None:
            caps.append("STLS")
    session.send("+OK Capability list follows")
    for cap in caps:
        session.send(cap)
    session.send(".")


def _plaintext_check(session: Pop3Session) -> None:
    if not (session.tls or session.cfg.allow_plaintext_auth):
        raise AuthFailed("Log in over TLS: use STLS or port 995")


# RFC 2595 §4 (STLS)
async def stls(session: Pop3Session, cmd: Bare) -> None:
    tls = session.server.tls_for("pop3")
    if session.tls or tls is None:
        raise Refused("TLS is not available here")
    if session.has_input():
        session.send("-ERR Data after STLS before the TLS handshake")
        session.state = UPDATE
        return
    session.send("+OK Begin TLS negotiation")
    await session.flush()
    await session.start_tls(tls.context)
    session.user = None  # RFC 2595 §4: nothing said before TLS carries over


# RFC 1939 §7 (USER)
def user(session: Pop3Session, cmd: User) -> None:
    _plaintext_check(session)
    session.user = cmd.name
    session.send("+OK Send your key with PASS")


async def _login(session: Pop3Session, login: str, key: str) -> None:
    try:
        principal = await session.server.authenticator.authenticate(
            login, key, "pop3", client=session.client, service="pop3"
        )
    except AuthRefused:
        raise AuthFailed("Authentication failed") from None
    maildrop = await session.open_maildrop(principal)
    total = sum(m.size for m in maildrop.messages)
    session.send(f"+OK Maildrop has {len(maildrop.messages)} messages ({total} octets)")


# RFC 1939 §7 (PASS)
async def pass_(session: Pop3Session, cmd: Pass) -> None:
    _plaintext_check(session)
    if session.user is None:
        raise Refused("Send USER first")
    login, session.user = session.user, None
    await _login(session, login, cmd.secret)


# RFC 5034 §4 (AUTH), RFC 4616 (PLAIN)
async def auth(session: Pop3Session, cmd: Auth) -> None:
    if cmd.mechanism is None:
        session.send("+OK Supported mechanisms follow")
        session.send("PLAIN")
        session.send(".")
        return
    _plaintext_check(session)
    if cmd.mechanism != "PLAIN":
        raise Refused("Unsupported mechanism")
    if cmd.initial is not None:
        response = cmd.initial.encode()
    else:
        session.send("+ ")
        await session.flush()
        try:
            line = await session.read_line()
        except TimeoutError:
            session.send(responses.AUTOLOGOUT)
            session.state = UPDATE
            return
        if line is None:
            raise Refused("Line too long")
        response = line.strip()
    plain = parser.parse_plain(response)
    key = plain.key
    if plain.authzid and plain.authzid.lower() != plain.login.lower():
        key = ""  # acting as another user is not supported: refused like a wrong key
    await _login(session, plain.login, key)


# RFC 1939 §5 (STAT)
def stat(session: Pop3Session, cmd: Bare) -> None:
    live = session.require_maildrop().live()
    session.send(f"+OK {len(live)} {sum(m.size for m in live)}")


def _listing(session: Pop3Session, cmd: Listing, what: str, value: Callable[[Message], str]) -> None:
    """LIST and UIDL: one message's line, or every undeleted message's as a multi-line answer."""
    maildrop = session.require_maildrop()
    if cmd.number is not None:
        msg = maildrop.message(cmd.number)
        session.send(f"+OK {cmd.number} {value(msg)}")
        return
    session.send(f"+OK {what} follows")
    for number, msg in enumerate(maildrop.messages, 1):
        if not msg.deleted:
            session.send(f"{number} {value(msg)}")
    session.send(".")


# RFC 1939 §5 (LIST)
def list_(session: Pop3Session, cmd: Listing) -> None:
    _listing(session, cmd, "Scan listing", lambda msg: str(msg.size))


# RFC 1939 §7 (UIDL)
def uidl(session: Pop3Session, cmd: Listing) -> None:
    validity = session.require_maildrop().uidvalidity
    _listing(session, cmd, "Unique-id listing", lambda msg: f"{validity}.{msg.uid}")


# RFC 1939 §5 (RETR)
def retr(session: Pop3Session, cmd: Numbered) -> Awaitable[None] | None:
    maildrop = session.require_maildrop()
    msg = maildrop.message(cmd.number)
    raw = maildrop.prefetched.pop(msg.uid, None)  # read ahead: answered without waiting
    if raw is None:
        return _retr_fetching(session, cmd.number, msg)
    _send_message(session, msg, raw)
    return None


async def _retr_fetching(session: Pop3Session, number: int, msg: Message) -> None:
    _send_message(session, msg, await session.require_maildrop().raw(number, msg))


def _send_message(session: Pop3Session, msg: Message, raw: bytes) -> None:
    session.send(b"+OK %d octets" % msg.size)
    session.out(responses.to_wire(raw, crlf=msg.crlf), responses.END)
    session.retrieved += 1
    session.require_maildrop().note_retrieved(msg)


# RFC 1939 §7 (TOP)
async def top(session: Pop3Session, cmd: Top) -> None:
    maildrop = session.require_maildrop()
    msg = maildrop.message(cmd.number)
    wire = responses.to_wire(await maildrop.raw(cmd.number, msg), crlf=msg.crlf)
    session.send("+OK Top of message follows")
    session.out(responses.top(wire, cmd.lines), responses.END)


# RFC 1939 §5 (DELE)
def dele(session: Pop3Session, cmd: Numbered) -> None:
    session.require_maildrop().message(cmd.number).deleted = True
    session.send(f"+OK Message {cmd.number} deleted")


# RFC 1939 §5 (NOOP)
def noop(session: Pop3Session, cmd: Bare) -> None:
    session.send("+OK")


# RFC 1939 §5 (RSET)
def rset(session: Pop3Session, cmd: Bare) -> None:
    maildrop = session.require_maildrop()
    for msg in maildrop.messages:
        msg.deleted = False
    session.send(f"+OK Maildrop has {len(maildrop.messages)} messages")


# RFC 1939 §4, §6 (QUIT, and the UPDATE state)
def quit_(session: Pop3Session, cmd: Bare) -> Awaitable[None] | None:
    if session.state == TRANSACTION:
        return _update(session)
    session.state = UPDATE
    session.send(responses.SIGNING_OFF)
    return None


async def _update(session: Pop3Session) -> None:
    # A failure here (the database) leaves the session in TRANSACTION, marks kept: QUIT may be tried again.
    session.removed = await session.require_maildrop().remove_marked()
    session.state = UPDATE
    # Unlocked before the client hears +OK: a client that logs in again at once finds the maildrop free.
    await session.close_maildrop()
    session.send(responses.SIGNING_OFF)


@dataclass(frozen=True)
class Verb:
    handler: Handler
    states: frozenset[str]
    rfc: str


_AUTH = frozenset({AUTHORIZATION})
_TRANS = frozenset({TRANSACTION})
_BOTH = _AUTH | _TRANS

COMMANDS: dict[str, Verb] = {
    "CAPA": Verb(capa, _BOTH, "RFC 2449 §5"),
    "STLS": Verb(stls, _AUTH, "RFC 2595 §4"),
    "USER": Verb(user, _AUTH, "RFC 1939 §7"),
    "PASS": Verb(pass_, _AUTH, "RFC 1939 §7"),
    "AUTH": Verb(auth, _AUTH, "RFC 5034 §4"),
    "STAT": Verb(stat, _TRANS, "RFC 1939 §5"),
    "LIST": Verb(list_, _TRANS, "RFC 1939 §5"),
    "UIDL": Verb(uidl, _TRANS, "RFC 1939 §7"),
    "RETR": Verb(retr, _TRANS, "RFC 1939 §5"),
    "TOP": Verb(top, _TRANS, "RFC 1939 §7"),
    "DELE": Verb(dele, _TRANS, "RFC 1939 §5"),
    "NOOP": Verb(noop, _TRANS, "RFC 1939 §5"),
    "RSET": Verb(rset, _TRANS, "RFC 1939 §5"),
    "QUIT": Verb(quit_, _BOTH, "RFC 1939 §4, §6"),
}
HANDLERS: dict[str, Handler] = {verb: entry.handler for verb, entry in COMMANDS.items()}
# Nothing is allowed in UPDATE: the session is over once it gets there.
ALLOWED: dict[str, frozenset[str]] = {
    state: frozenset(verb for verb, entry in COMMANDS.items() if state in entry.states)
    for state in (AUTHORIZATION, TRANSACTION, UPDATE)
}
