"""How mail travels: STARTTLS, require_tls, connection reuse, SMTPUTF8, and the smarthost with AUTH."""

from __future__ import annotations

import pytest

from relate.config import SmarthostConfig

from .conftest import Harness

SMARTHOST = "127.0.0.5"
RELAY_LOGIN = ("relay-user", "s3cret-relay")


# --- STARTTLS -------------------------------------------------------------------


async def test_starttls_used_when_offered_plain_otherwise(h: Harness) -> None:
    """A host offering STARTTLS gets the mail over TLS; a host without it gets it in plain text."""
    secure = await h.net.mta("127.0.0.2", starttls=True)
    plain = await h.net.mta("127.0.0.3")
    h.net.mx("tls.test", (10, "mx.tls.test", "127.0.0.2"))
    h.net.mx("plain.test", (10, "mx.plain.test", "127.0.0.3"))
    eid = await h.queue(["a@tls.test", "b@plain.test"])
    await h.run()
    assert [(t.rcpt_tos, t.tls) for t in secure.transactions] == [(["a@tls.test"], True)]
    assert [(t.rcpt_tos, t.tls) for t in plain.transactions] == [(["b@plain.test"], False)]
    assert {r["status"] for r in (await h.recipients(eid)).values()} == {"sent"}


async def test_require_tls_defers_rather_than_send_in_clear(h: Harness) -> None:
    """With require_tls, a host without STARTTLS never sees MAIL: the recipient waits (4.4.1); a TLS host gets mail."""
    h.cfg.delivery.require_tls = True
    plain = await h.net.mta("127.0.0.2")
    secure = await h.net.mta("127.0.0.3", starttls=True)
    h.net.mx("plain.test", (10, "mx.plain.test", "127.0.0.2"))
    h.net.mx("tls.test", (10, "mx.tls.test", "127.0.0.3"))
    eid = await h.queue(["a@plain.test", "b@tls.test"])
    await h.run()
    rcpts = await h.recipients(eid)
    assert (rcpts["a@plain.test"]["status"], rcpts["a@plain.test"]["status_code"]) == ("deferred", "4.4.1")
    assert "STARTTLS" in rcpts["a@plain.test"]["last_error"]
    assert plain.connections == 1
    assert plain.mail_commands == 0
    assert plain.transactions == []
    assert rcpts["b@tls.test"]["status"] == "sent"
    assert [t.tls for t in secure.transactions] == [True]


async def test_require_tls_skips_to_an_mx_host_offering_starttls(h: Harness) -> None:
    """With require_tls, a plain primary MX is skipped and a backup MX with STARTTLS gets the mail."""
    h.cfg.delivery.require_tls = True
    plain = await h.net.mta("127.0.0.2")
    secure = await h.net.mta("127.0.0.3", starttls=True)
    h.net.mx("mixed.test", (10, "mx1.mixed.test", "127.0.0.2"), (20, "mx2.mixed.test", "127.0.0.3"))
    eid = await h.queue(["a@mixed.test"])
    await h.run()
    assert plain.mail_commands == 0
    assert [t.tls for t in secure.transactions] == [True]
    assert (await h.recipients(eid))["a@mixed.test"]["remote_mta"] == "mx2.mixed.test"


async def test_smtputf8_address_to_a_host_supporting_it(h: Harness) -> None:
    """A non-ASCII recipient goes out with SMTPUTF8 to a host that offers it."""
    sink = await h.net.mta("127.0.0.2", smtputf8=True)
    h.net.mx("utf8.test", (10, "mx.utf8.test", "127.0.0.2"))
    eid = await h.queue(["jürgen@utf8.test"])
    await h.run()
    assert (await h.recipients(eid))["jürgen@utf8.test"]["status"] == "sent"
    assert [t.rcpt_tos for t in sink.transactions] == [["jürgen@utf8.test"]]
    assert "SMTPUTF8" in sink.transactions[0].mail_options


async def test_smtputf8_address_to_a_host_without_it_fails_5_6_7(h: Harness) -> None:
    """A non-ASCII recipient at a host without SMTPUTF8 fails with 5.6.7 instead of being mangled."""
    sink = await h.net.mta("127.0.0.2")
    h.net.mx("ascii.test", (10, "mx.ascii.test", "127.0.0.2"))
    eid = await h.queue(["jürgen@ascii.test"])
    await h.run()
    r = (await h.recipients(eid))["jürgen@ascii.test"]
    assert (r["status"], r["status_code"]) == ("failed", "5.6.7")
    assert sink.mail_commands == 0


async def test_smtputf8_address_over_starttls(h: Harness) -> None:
    """A non-ASCII recipient at a host offering STARTTLS and SMTPUTF8 is delivered over TLS."""
    sink = await h.net.mta("127.0.0.2", starttls=True, smtputf8=True)
    h.net.mx("utf8.test", (10, "mx.utf8.test", "127.0.0.2"))
    eid = await h.queue(["jürgen@utf8.test"])
    await h.run()
    assert (await h.recipients(eid))["jürgen@utf8.test"]["status"] == "sent"
    assert [(t.rcpt_tos, t.tls) for t in sink.transactions] == [(["jürgen@utf8.test"], True)]


async def test_8bitmime_and_size_declared_over_starttls(h: Harness) -> None:
    """Over STARTTLS, as in plain text, MAIL FROM declares BODY=8BITMIME and the SIZE of the message."""
    sink = await h.net.mta("127.0.0.2", starttls=True)
    h.net.mx("tls.test", (10, "mx.tls.test", "127.0.0.2"))
    await h.queue(["a@tls.test"], body="Grüße aus Köln.\r\n")
    await h.run()
    (seen,) = sink.transactions
    assert seen.tls
    assert "BODY=8BITMIME" in seen.mail_options
    assert any(o.startswith("SIZE=") for o in seen.mail_options)


# --- connection reuse -------------------------------------------------------------


async def test_twenty_messages_share_one_connection(h: Harness) -> None:
    """Twenty messages to one domain travel over a single connection, one transaction each."""
    sink = await h.net.mta("127.0.0.2")
    h.net.mx("bulk.test", (10, "mx.bulk.test", "127.0.0.2"))
    ids = [await h.queue([f"user{i}@bulk.test"]) for i in range(20)]
    await h.run()
    assert sink.connections == 1
    assert len(sink.transactions) == 20
    assert sorted(t.rcpt_tos[0] for t in sink.transactions) == sorted(f"user{i}@bulk.test" for i in range(20))
    assert {await h.status(eid) for eid in ids} == {"sent"}


async def test_messages_per_connection_limits_each_connection(h: Harness) -> None:
    """With messages_per_connection = 5, twenty messages take four connections."""
    h.cfg.delivery.messages_per_connection = 5
    sink = await h.net.mta("127.0.0.2")
    h.net.mx("bulk.test", (10, "mx.bulk.test", "127.0.0.2"))
    ids = [await h.queue([f"user{i}@bulk.test"]) for i in range(20)]
    await h.run()
    assert sink.connections == 4
    assert len(sink.transactions) == 20
    assert {await h.status(eid) for eid in ids} == {"sent"}


@pytest.mark.parametrize(("per_domain", "connections"), [(4, 3), (2, 2)])
async def test_a_large_domain_group_goes_over_several_connections(
    h: Harness, per_domain: int, connections: int
) -> None:
    """Sixty messages to one domain take a connection per twenty, at most max_connections_per_domain."""
    h.cfg.delivery.max_connections_per_domain = per_domain
    sink = await h.net.mta("127.0.0.2")
    h.net.mx("bulk.test", (10, "mx.bulk.test", "127.0.0.2"))
    ids = [await h.queue([f"user{i}@bulk.test"]) for i in range(60)]
    await h.run()
    assert sink.connections == connections
    assert sorted(t.rcpt_tos[0] for t in sink.transactions) == sorted(f"user{i}@bulk.test" for i in range(60))
    assert {await h.status(eid) for eid in ids} == {"sent"}


async def test_failed_reconnect_keeps_the_messages_already_sent(h: Harness) -> None:
    """The host refusing the next connection after messages_per_connection: what went out stays sent, the rest waits."""
    h.cfg.delivery.messages_per_connection = 2
    sink = await h.net.mta("127.0.0.2")
    sink.refuse_after = 1  # the server stops listening after its first connection
    h.net.mx("bulk.test", (10, "mx.bulk.test", "127.0.0.2"))
    ids = [await h.queue([f"user{i}@bulk.test"]) for i in range(4)]
    await h.run()
    assert len(sink.transactions) == 2
    delivered = {t.rcpt_tos[0] for t in sink.transactions}
    for i, eid in enumerate(ids):
        r = (await h.recipients(eid))[f"user{i}@bulk.test"]
        assert r["status"] == ("sent" if r["address"] in delivered else "deferred"), r


async def test_busy_reply_on_reconnect_defers_only_the_rest(h: Harness) -> None:
    """A 421 to EHLO on the next connection: the pass completes, what went out is sent, the rest is deferred."""
    h.cfg.delivery.messages_per_connection = 2
    sink = await h.net.mta("127.0.0.2")
    sink.busy_after = 1
    h.net.mx("bulk.test", (10, "mx.bulk.test", "127.0.0.2"))
    ids = [await h.queue([f"user{i}@bulk.test"]) for i in range(4)]
    assert await h.run() is True
    assert len(sink.transactions) == 2
    delivered = {t.rcpt_tos[0] for t in sink.transactions}
    for i, eid in enumerate(ids):
        r = (await h.recipients(eid))[f"user{i}@bulk.test"]
        assert r["status"] == ("sent" if r["address"] in delivered else "deferred"), r


# --- smarthost ----------------------------------------------------------------------


def smarthost(h: Harness, **overrides: object) -> None:
    """Relay through 127.0.0.5 without TLS (a loopback relay), logging in as relay-user."""
    assert h.net.port is not None
    settings: dict[str, object] = {
        "host": SMARTHOST,
        "port": h.net.port,
        "tls": "none",
        "username": RELAY_LOGIN[0],
        "password": RELAY_LOGIN[1],
    }
    settings.update(overrides)
    h.cfg.delivery.smarthost = SmarthostConfig(**settings)  # type: ignore[arg-type]


async def test_smarthost_with_auth_takes_mail_for_any_domain(h: Harness) -> None:
    """Every remote domain goes through the smarthost, which sees the configured login; no DNS is needed."""
    relay = await h.net.mta(SMARTHOST, credentials=RELAY_LOGIN)
    smarthost(h)
    # The zone is empty: an MX lookup would fail with NXDOMAIN.
    eid = await h.queue(["a@anywhere.test", "b@elsewhere.test"])
    await h.run()
    rcpts = await h.recipients(eid)
    assert {(r["status"], r["remote_mta"]) for r in rcpts.values()} == {("sent", SMARTHOST)}
    assert sorted(t.rcpt_tos[0] for t in relay.transactions) == ["a@anywhere.test", "b@elsewhere.test"]
    assert {t.login for t in relay.transactions} == {RELAY_LOGIN[0]}
    assert set(relay.logins) == {RELAY_LOGIN}


async def test_smarthost_with_wrong_password_defers(h: Harness) -> None:
    """A smarthost refusing the login: the mail waits (4.4.1, with the 535 reply) and nothing is sent."""
    relay = await h.net.mta(SMARTHOST, credentials=RELAY_LOGIN)
    smarthost(h, password="wrong")
    eid = await h.queue(["a@anywhere.test"])
    await h.run()
    r = (await h.recipients(eid))["a@anywhere.test"]
    assert (r["status"], r["status_code"]) == ("deferred", "4.4.1")
    assert "535" in r["last_error"]
    assert relay.transactions == []
    assert relay.mail_commands == 0


async def test_smarthost_domains_limit_what_goes_through_it(h: Harness) -> None:
    """With smarthost.domains, only those domains go through the smarthost; others go by MX, without AUTH."""
    relay = await h.net.mta(SMARTHOST, credentials=RELAY_LOGIN)
    direct = await h.net.mta("127.0.0.2")
    h.net.mx("direct.test", (10, "mx.direct.test", "127.0.0.2"))
    smarthost(h, domains=["relay.test"])
    eid = await h.queue(["a@relay.test", "b@direct.test"])
    await h.run()
    rcpts = await h.recipients(eid)
    assert (rcpts["a@relay.test"]["status"], rcpts["a@relay.test"]["remote_mta"]) == ("sent", SMARTHOST)
    assert (rcpts["b@direct.test"]["status"], rcpts["b@direct.test"]["remote_mta"]) == ("sent", "mx.direct.test")
    assert [(t.rcpt_tos, t.login) for t in relay.transactions] == [(["a@relay.test"], RELAY_LOGIN[0])]
    assert [(t.rcpt_tos, t.login) for t in direct.transactions] == [(["b@direct.test"], None)]


async def test_smarthost_starttls_requires_a_valid_certificate(h: Harness) -> None:
    """A smarthost with tls=starttls and a self-signed certificate is refused: no login is sent, the mail waits."""
    relay = await h.net.mta(SMARTHOST, starttls=True, credentials=RELAY_LOGIN)
    smarthost(h, tls="starttls")
    eid = await h.queue(["a@anywhere.test"])
    await h.run()
    r = (await h.recipients(eid))["a@anywhere.test"]
    assert (r["status"], r["status_code"]) == ("deferred", "4.4.1")
    assert "CERTIFICATE_VERIFY_FAILED" in r["last_error"] or "certificate" in r["last_error"].lower(), r["last_error"]
    assert relay.logins == []
    assert relay.mail_commands == 0
