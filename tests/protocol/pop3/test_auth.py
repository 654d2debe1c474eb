"""AUTHORIZATION state: USER/PASS, AUTH PLAIN, STLS, the TLS-only login policy, and CAPA in every state."""

from __future__ import annotations

import base64
import copy
import poplib

import pytest

from relate.auth import Authenticator
from relate.config import ListenerConfig
from relate.pop3.server import Pop3Server

from .helpers import ALICE, BOB, Client, Pop3, blocking, logged_in, make_message

BASE_CAPS = {"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "IMPLEMENTATION Relate-Mail"}


# -- greeting and CAPA ------------------------------------------------------------------


async def test_greeting_on_both_ports(pop3: Pop3) -> None:
    """Both listeners greet with +OK, pop3 in plain text and pop3s inside TLS."""
    plain = await Client.connect(pop3.pop3)
    tls = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert plain.greeting == "+OK Relate Mail POP3 server ready"
    assert tls.greeting == "+OK Relate Mail POP3 server ready"


async def test_capa_before_tls_offers_only_stls(pop3: Pop3) -> None:
    """Before TLS (plaintext login off), CAPA lists STLS and neither USER nor SASL."""
    client = await Client.connect(pop3.pop3)
    caps = await client.capa()
    assert set(caps) == BASE_CAPS | {"STLS"}


async def test_capa_after_stls_offers_login_not_stls(pop3: Pop3) -> None:
    """After STLS, CAPA lists USER and SASL PLAIN and no longer STLS."""
    client = await Client.connect(pop3.pop3)
    await client.stls(pop3.client_tls)
    assert set(await client.capa()) == BASE_CAPS | {"USER", "SASL PLAIN"}


async def test_capa_on_pop3s(pop3: Pop3) -> None:
    """On the implicit-TLS port CAPA lists USER and SASL PLAIN, and no STLS."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert set(await client.capa()) == BASE_CAPS | {"USER", "SASL PLAIN"}


async def test_capa_in_transaction_lists_no_login_mechanisms(pop3: Pop3) -> None:
    """After login, CAPA lists what a session can do: no USER, SASL or STLS."""
    client = await logged_in(pop3)
    assert set(await client.capa()) == BASE_CAPS


async def test_capa_with_plaintext_auth_allowed(pop3: Pop3) -> None:
    """With allow_plaintext_auth, CAPA before TLS lists USER, SASL PLAIN and STLS."""
    pop3.cfg.pop3.allow_plaintext_auth = True
    client = await Client.connect(pop3.pop3)
    assert set(await client.capa()) == BASE_CAPS | {"USER", "SASL PLAIN", "STLS"}


async def test_capa_via_poplib(pop3: Pop3) -> None:
    """poplib's capa() parses the server's list, with PIPELINING and the implementation name."""

    def talk() -> dict[str, list[str]]:
        client = poplib.POP3_SSL("127.0.0.1", pop3.pop3s, context=pop3.client_tls, timeout=10)
        try:
            return client.capa()
        finally:
            client.quit()

    caps = await blocking(talk)
    assert caps["SASL"] == ["PLAIN"]
    assert caps["IMPLEMENTATION"] == ["Relate-Mail"]
    assert {"USER", "TOP", "UIDL", "PIPELINING", "RESP-CODES", "AUTH-RESP-CODE"} <= set(caps)


# -- login refused before TLS -------------------------------------------------------------


async def test_user_refused_before_tls(pop3: Pop3) -> None:
    """USER on the plain port before STLS is refused with [AUTH] and a hint to use TLS."""
    client = await Client.connect(pop3.pop3)
    assert await client.cmd(f"USER {ALICE}") == "-ERR [AUTH] Log in over TLS: use STLS or port 995"
    assert (await client.cmd(f"PASS {pop3.alice_key}")).startswith("-ERR [AUTH]")


async def test_auth_plain_refused_before_tls(pop3: Pop3) -> None:
    """AUTH PLAIN on the plain port before STLS is refused with [AUTH], even with the right key."""
    client = await Client.connect(pop3.pop3)
    assert (await client.auth_plain(ALICE, pop3.alice_key)).startswith("-ERR [AUTH] Log in over TLS")
    # Still in AUTHORIZATION: the maildrop was never opened.
    assert await client.cmd("STAT") == "-ERR STAT is not allowed now"


async def test_plaintext_login_when_allowed(pop3: Pop3) -> None:
    """With allow_plaintext_auth, USER/PASS works on the plain port without STLS."""
    pop3.cfg.pop3.allow_plaintext_auth = True
    client = await Client.connect(pop3.pop3)
    assert (await client.login(ALICE, pop3.alice_key)).startswith("+OK Maildrop has 0 messages")


# -- STLS ------------------------------------------------------------------------------------


async def test_stls_then_user_pass(pop3: Pop3) -> None:
    """STLS upgrades the connection; USER/PASS then opens the maildrop."""
    await pop3.deliver(ALICE, make_message())
    client = await Client.connect(pop3.pop3)
    assert await client.stls(pop3.client_tls) == "+OK Begin TLS negotiation"
    assert await client.cmd(f"USER {ALICE}") == "+OK Send your key with PASS"
    reply = await client.cmd(f"PASS {pop3.alice_key}")
    assert reply.startswith("+OK Maildrop has 1 messages (")


async def test_stls_then_auth_plain(pop3: Pop3) -> None:
    """STLS then AUTH PLAIN with an initial response logs in."""
    client = await Client.connect(pop3.pop3)
    await client.stls(pop3.client_tls)
    assert (await client.auth_plain(ALICE, pop3.alice_key)).startswith("+OK Maildrop has 0 messages")


async def test_stls_refused_inside_tls(pop3: Pop3) -> None:
    """STLS on pop3s, or a second STLS, is refused and the session goes on."""
    implicit = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await implicit.cmd("STLS") == "-ERR TLS is not available here"
    upgraded = await Client.connect(pop3.pop3)
    await upgraded.stls(pop3.client_tls)
    assert await upgraded.cmd("STLS") == "-ERR TLS is not available here"
    assert (await upgraded.login(ALICE, pop3.alice_key)).startswith("+OK")


async def test_stls_with_pipelined_commands_is_refused(pop3: Pop3) -> None:
    """Commands sent behind STLS before the handshake (an injection) get -ERR and the connection closes."""
    client = await Client.connect(pop3.pop3)
    await client.write(f"STLS\r\nUSER {ALICE}\r\n".encode())
    assert await client.status() == "-ERR Data after STLS before the TLS handshake"
    assert await client.closed()


async def test_stls_not_offered_without_certificate(pop3: Pop3) -> None:
    """Without any certificate configured, the pop3 port offers no STLS and refuses it."""
    cfg = copy.deepcopy(pop3.cfg)
    cfg.tls.cert = cfg.tls.key = None
    cfg.pop3.pop3s = ListenerConfig(listen=[])
    server = Pop3Server(cfg, pop3.pool, Authenticator(pop3.pool, cfg.auth))
    await server.start()
    try:
        client = await Client.connect(server.addresses("pop3")[0][1])
        assert "STLS" not in await client.capa()
        assert await client.cmd("STLS") == "-ERR TLS is not available here"
        assert await client.cmd(f"USER {ALICE}") == "-ERR [AUTH] Log in over TLS: use STLS or port 995"
        await client.close()
    finally:
        await server.stop(grace=1)


async def test_stls_via_poplib(pop3: Pop3) -> None:
    """poplib's stls() upgrades the plain port, then user/pass_ logs in."""

    def talk() -> tuple[bytes, tuple[int, int]]:
        client = poplib.POP3("127.0.0.1", pop3.pop3, timeout=10)
        try:
            client.stls(context=pop3.client_tls)
            client.user(ALICE)
            reply = client.pass_(pop3.alice_key)
            return reply, client.stat()
        finally:
            client.quit()

    reply, stat = await blocking(talk)
    assert reply.startswith(b"+OK Maildrop has 0 messages")
    assert stat == (0, 0)


# -- USER / PASS ---------------------------------------------------------------------------


async def test_user_pass(pop3: Pop3) -> None:
    """USER then PASS with a pop3 key opens the maildrop and tells its size."""
    first, second = make_message(subject="one"), make_message(subject="two")
    await pop3.deliver(ALICE, first)
    await pop3.deliver(ALICE, second)
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    reply = await client.login(ALICE, pop3.alice_key)
    assert reply == f"+OK Maildrop has 2 messages ({len(first) + len(second)} octets)"


async def test_user_pass_via_poplib(pop3: Pop3) -> None:
    """poplib logs in over pop3s with user/pass_."""
    await pop3.deliver(ALICE, make_message())

    def talk() -> tuple[int, int]:
        client = poplib.POP3_SSL("127.0.0.1", pop3.pop3s, context=pop3.client_tls, timeout=10)
        try:
            assert client.getwelcome() == b"+OK Relate Mail POP3 server ready"
            client.user(ALICE)
            client.pass_(pop3.alice_key)
            return client.stat()
        finally:
            client.quit()

    count, _ = await blocking(talk)
    assert count == 1


async def test_login_by_alias(pop3: Pop3) -> None:
    """An alias of the user logs in to the same maildrop."""
    await pop3.deliver(ALICE, make_message())
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert (await client.login("al@example.com", pop3.alice_key)).startswith("+OK Maildrop has 1 messages")


async def test_login_is_case_insensitive_on_the_address(pop3: Pop3) -> None:
    """The login address is matched without regard to case."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert (await client.login("Alice@Example.COM", pop3.alice_key)).startswith("+OK")


async def test_wrong_key_is_auth_error(pop3: Pop3) -> None:
    """PASS with a wrong key answers -ERR [AUTH]; a new USER/PASS can then succeed."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.login(ALICE, pop3.alice_key[:-4] + "AAAA") == "-ERR [AUTH] Authentication failed"
    assert (await client.login(ALICE, pop3.alice_key)).startswith("+OK")


async def test_key_without_pop3_scope_is_auth_error(pop3: Pop3) -> None:
    """A valid key of the user without the pop3 scope is refused like a wrong one."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.login(ALICE, pop3.imap_only_key) == "-ERR [AUTH] Authentication failed"


async def test_other_users_key_is_auth_error(pop3: Pop3) -> None:
    """Bob's key does not open Alice's maildrop."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.login(ALICE, pop3.bob_key) == "-ERR [AUTH] Authentication failed"


async def test_unknown_user_is_auth_error(pop3: Pop3) -> None:
    """An unknown address gets the same [AUTH] answer as a wrong key."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.login("nobody@example.com", pop3.alice_key) == "-ERR [AUTH] Authentication failed"


async def test_wrong_key_via_poplib(pop3: Pop3) -> None:
    """poplib raises error_proto carrying -ERR [AUTH] for a wrong key."""

    def talk() -> str:
        client = poplib.POP3_SSL("127.0.0.1", pop3.pop3s, context=pop3.client_tls, timeout=10)
        try:
            client.user(ALICE)
            with pytest.raises(poplib.error_proto) as caught:
                client.pass_("relate_000000000000_" + "x" * 32)
            return str(caught.value)
        finally:
            client.quit()

    assert "-ERR [AUTH]" in await blocking(talk)


async def test_pass_without_user(pop3: Pop3) -> None:
    """PASS before USER is refused; so is PASS after a failed PASS (USER is used up)."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.cmd(f"PASS {pop3.alice_key}") == "-ERR Send USER first"
    assert (await client.login(ALICE, "wrong")).startswith("-ERR [AUTH]")
    assert await client.cmd(f"PASS {pop3.alice_key}") == "-ERR Send USER first"


async def test_user_needs_one_argument(pop3: Pop3) -> None:
    """USER without an address, or with two words, is refused."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.cmd("USER") == "-ERR USER takes one argument"
    assert await client.cmd("USER a b") == "-ERR USER takes one argument"


async def test_commands_are_case_insensitive(pop3: Pop3) -> None:
    """Command verbs are accepted in any case."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert (await client.cmd(f"user {ALICE}")).startswith("+OK")
    assert (await client.cmd(f"pAsS {pop3.alice_key}")).startswith("+OK")
    assert await client.cmd("noop") == "+OK"


# -- AUTH PLAIN -------------------------------------------------------------------------------


async def test_auth_lists_mechanisms(pop3: Pop3) -> None:
    """AUTH without arguments lists PLAIN."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    status, body = await client.multi("AUTH")
    assert status == "+OK Supported mechanisms follow"
    assert body == b"PLAIN\r\n"


async def test_auth_plain_initial_response(pop3: Pop3) -> None:
    """AUTH PLAIN with the credentials on the command line logs in."""
    await pop3.deliver(ALICE, make_message())
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert (await client.auth_plain(ALICE, pop3.alice_key)).startswith("+OK Maildrop has 1 messages")


async def test_auth_plain_continuation(pop3: Pop3) -> None:
    """AUTH PLAIN without initial response gets '+ ' and takes the credentials on the next line."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.cmd("auth plain") == "+ "
    token = base64.b64encode(f"\0{ALICE}\0{pop3.alice_key}".encode()).decode()
    assert (await client.cmd(token)).startswith("+OK Maildrop has 0 messages")


async def test_auth_plain_with_own_authzid(pop3: Pop3) -> None:
    """An authorization identity equal to the login is accepted."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert (await client.auth_plain(ALICE, pop3.alice_key, authzid=ALICE)).startswith("+OK")


async def test_auth_plain_as_another_user_refused(pop3: Pop3) -> None:
    """Asking to act as another user (authzid) is refused with [AUTH]."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.auth_plain(ALICE, pop3.alice_key, authzid=BOB) == "-ERR [AUTH] Authentication failed"


async def test_auth_plain_wrong_key(pop3: Pop3) -> None:
    """AUTH PLAIN with a wrong key answers -ERR [AUTH]."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.auth_plain(ALICE, "relate_000000000000_" + "y" * 32) == "-ERR [AUTH] Authentication failed"


async def test_auth_plain_key_without_pop3_scope(pop3: Pop3) -> None:
    """AUTH PLAIN with an imap-only key answers -ERR [AUTH]."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.auth_plain(ALICE, pop3.imap_only_key) == "-ERR [AUTH] Authentication failed"


async def test_auth_plain_cancelled(pop3: Pop3) -> None:
    """'*' in answer to '+ ' cancels the exchange; login works afterwards."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.cmd("AUTH PLAIN") == "+ "
    assert await client.cmd("*") == "-ERR Authentication cancelled"
    assert (await client.auth_plain(ALICE, pop3.alice_key)).startswith("+OK")


@pytest.mark.parametrize(
    ("argument", "reply"),
    [
        ("not*base64", "-ERR Invalid base64"),
        (base64.b64encode(b"only-two\0parts").decode(), "-ERR [AUTH] Malformed PLAIN response"),
        ("=", "-ERR [AUTH] Malformed PLAIN response"),
    ],
)
async def test_auth_plain_malformed(pop3: Pop3, argument: str, reply: str) -> None:
    """Undecodable or malformed PLAIN responses are refused and the session stays usable."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.cmd(f"AUTH PLAIN {argument}") == reply
    assert (await client.auth_plain(ALICE, pop3.alice_key)).startswith("+OK")


async def test_auth_unsupported_mechanism(pop3: Pop3) -> None:
    """AUTH with a mechanism other than PLAIN is refused."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.cmd("AUTH CRAM-MD5") == "-ERR Unsupported mechanism"
    assert await client.cmd("AUTH LOGIN") == "-ERR Unsupported mechanism"


# -- state rules in AUTHORIZATION ----------------------------------------------------------------


@pytest.mark.parametrize("command", ["STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 0", "UIDL"])
async def test_transaction_commands_refused_before_login(pop3: Pop3, command: str) -> None:
    """TRANSACTION commands before login answer -ERR '<verb> is not allowed now'."""
    await pop3.deliver(ALICE, make_message())
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    verb = command.split()[0]
    assert await client.cmd(command) == f"-ERR {verb} is not allowed now"
    assert (await client.login(ALICE, pop3.alice_key)).startswith("+OK")


@pytest.mark.parametrize("command", ["USER x@example.com", "PASS x", "AUTH PLAIN AGFAYg==", "AUTH", "STLS"])
async def test_authorization_commands_refused_after_login(pop3: Pop3, command: str) -> None:
    """USER, PASS, AUTH and STLS after login answer -ERR '<verb> is not allowed now'."""
    client = await logged_in(pop3)
    assert await client.cmd(command) == f"-ERR {command.split()[0]} is not allowed now"
    assert await client.cmd("STAT") == "+OK 0 0"


async def test_quit_in_authorization(pop3: Pop3) -> None:
    """QUIT before login signs off and closes the connection."""
    client = await Client.connect(pop3.pop3s, tls=pop3.client_tls)
    assert await client.cmd("QUIT") == "+OK Relate Mail POP3 server signing off"
    assert await client.closed()
