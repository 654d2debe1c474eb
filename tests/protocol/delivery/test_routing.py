"""Where mail goes: MX lookup and its fallbacks, DNS failures, refused and dropped connections."""

from __future__ import annotations

from .conftest import Harness
from .helpers import ALICE


async def test_null_mx_fails_at_once_5_1_10(h: Harness) -> None:
    """A domain publishing a null MX (RFC 7505) fails on the first try with 5.1.10 and a DSN."""
    h.net.zone.add("nullmx.test", "MX", "0 .")
    eid = await h.queue(["someone@nullmx.test"])
    await h.run()
    r = (await h.recipients(eid))["someone@nullmx.test"]
    assert (r["status"], r["status_code"], r["attempts"]) == ("failed", "5.1.10", 1)
    assert "null MX" in r["remote_reply"]
    assert await h.status(eid) == "failed"
    (dsn,) = await h.dsns(ALICE)
    assert dsn.recipient("someone@nullmx.test")["Status"] == "5.1.10"


async def test_nxdomain_fails_5_1_2(h: Harness) -> None:
    """A domain that does not exist (NXDOMAIN) fails permanently with 5.1.2."""
    eid = await h.queue(["someone@nowhere.test"])
    await h.run()
    r = (await h.recipients(eid))["someone@nowhere.test"]
    assert (r["status"], r["status_code"]) == ("failed", "5.1.2")
    assert "does not exist" in r["remote_reply"]
    (dsn,) = await h.dsns(ALICE)
    assert dsn.recipient("someone@nowhere.test")["Status"] == "5.1.2"


async def test_servfail_defers_4_4_3(h: Harness) -> None:
    """A DNS server failure (SERVFAIL) is temporary: deferred with 4.4.3, retried later, no DSN."""
    h.net.zone.fail.add("broken.test")
    eid = await h.queue(["someone@broken.test"])
    await h.run()
    r = (await h.recipients(eid))["someone@broken.test"]
    assert (r["status"], r["status_code"]) == ("deferred", "4.4.3")
    assert r["next_attempt_at"] is not None
    assert await h.status(eid) == "queued"
    assert await h.inbox(ALICE) == []

    # Once DNS answers again, the mail goes out.
    sink = await h.net.mta("127.0.0.2")
    h.net.zone.fail.discard("broken.test")
    h.net.mx("broken.test", (10, "mx.broken.test", "127.0.0.2"))
    h.clock.advance(120)
    await h.run()
    assert (await h.recipients(eid))["someone@broken.test"]["status"] == "sent"
    assert len(sink.transactions) == 1


async def test_no_mx_delivers_to_the_domains_a_record(h: Harness) -> None:
    """A domain with no MX but an A record gets its mail at that address (the implicit MX)."""
    sink = await h.net.mta("127.0.0.2")
    h.net.zone.add("amx.test", "A", "127.0.0.2")
    eid = await h.queue(["someone@amx.test"])
    await h.run()
    r = (await h.recipients(eid))["someone@amx.test"]
    assert (r["status"], r["remote_mta"]) == ("sent", "amx.test")
    assert [t.rcpt_tos for t in sink.transactions] == [["someone@amx.test"]]


async def test_no_mx_and_no_address_fails(h: Harness) -> None:
    """A domain that exists but has neither MX nor address records fails with 5.1.2."""
    h.net.zone.add("empty.test", "TXT", '"v=spf1 -all"')
    eid = await h.queue(["someone@empty.test"])
    await h.run()
    r = (await h.recipients(eid))["someone@empty.test"]
    assert (r["status"], r["status_code"]) == ("failed", "5.1.2")


async def test_lowest_mx_preference_tried_first(h: Harness) -> None:
    """Of two MX hosts that both accept, the one with the lower preference number gets the mail, every time."""
    backup = await h.net.mta("127.0.0.2")
    primary = await h.net.mta("127.0.0.3")
    # Published backup first, so the order of the records is not what decides.
    h.net.mx("pref.test", (20, "backup.pref.test", "127.0.0.2"), (10, "primary.pref.test", "127.0.0.3"))
    ids = []
    for _ in range(4):
        ids.append(await h.queue(["someone@pref.test"]))
        await h.run()
    assert backup.connections == 0
    assert primary.connections == 4
    assert len(primary.transactions) == 4
    for eid in ids:
        assert (await h.recipients(eid))["someone@pref.test"]["remote_mta"] == "primary.pref.test"


async def test_refused_connection_moves_on_to_the_next_mx(h: Harness) -> None:
    """Nothing listening at the first MX host: the mail is delivered through the second."""
    second = await h.net.mta("127.0.0.3")  # the port is bound on 127.0.0.3 only
    h.net.mx("refuse.test", (10, "mx1.refuse.test", "127.0.0.2"), (20, "mx2.refuse.test", "127.0.0.3"))
    eid = await h.queue(["someone@refuse.test"])
    await h.run()
    r = (await h.recipients(eid))["someone@refuse.test"]
    assert (r["status"], r["remote_mta"]) == ("sent", "mx2.refuse.test")
    assert len(second.transactions) == 1


async def test_no_host_reachable_defers_naming_the_last_error(h: Harness) -> None:
    """When no MX host takes the connection, the recipient is deferred with 4.4.1 and the connection error."""
    await h.net.mta("127.0.0.3")  # binds the port, but not on the MX host's address
    h.net.mx("down.test", (10, "mx1.down.test", "127.0.0.2"))
    eid = await h.queue(["someone@down.test"])
    await h.run()
    r = (await h.recipients(eid))["someone@down.test"]
    assert (r["status"], r["status_code"]) == ("deferred", "4.4.1")
    assert "mx1.down.test[127.0.0.2]" in r["last_error"]
    assert await h.status(eid) == "queued"


async def test_connection_dropped_mid_data_tries_the_next_host(h: Harness) -> None:
    """A host dropping the connection after the data, before replying: not counted as sent; the next host gets it."""
    dropper = await h.net.mta("127.0.0.2", drop_data=True)
    good = await h.net.mta("127.0.0.3")
    h.net.mx("drop.test", (10, "mx1.drop.test", "127.0.0.2"), (20, "mx2.drop.test", "127.0.0.3"))
    eid = await h.queue(["a@drop.test", "b@drop.test"])
    await h.run()
    assert len(dropper.dropped) == 1
    assert dropper.transactions == []
    assert [t.rcpt_tos for t in good.transactions] == [["a@drop.test", "b@drop.test"]]
    rcpts = await h.recipients(eid)
    assert {(r["status"], r["remote_mta"]) for r in rcpts.values()} == {("sent", "mx2.drop.test")}


async def test_connection_dropped_mid_data_at_the_only_host_defers(h: Harness) -> None:
    """The only host drops the connection mid-DATA: the recipients are deferred, not sent, and retried later."""
    dropper = await h.net.mta("127.0.0.2", drop_data=True)
    h.net.mx("drop.test", (10, "mx1.drop.test", "127.0.0.2"))
    first = await h.queue(["a@drop.test"])
    second = await h.queue(["b@drop.test"])
    await h.run()
    assert len(dropper.dropped) == 1  # the connection was gone before the second message
    for eid, rcpt in ((first, "a@drop.test"), (second, "b@drop.test")):
        r = (await h.recipients(eid))[rcpt]
        assert (r["status"], r["status_code"]) == ("deferred", "4.4.1"), r
        assert "mx1.drop.test[127.0.0.2]" in r["last_error"]
        assert await h.status(eid) == "queued"

    dropper.drop_data = False
    h.clock.advance(120)
    await h.run()
    assert sorted(t.rcpt_tos[0] for t in dropper.transactions) == ["a@drop.test", "b@drop.test"]
    assert await h.status(first) == await h.status(second) == "sent"


async def test_drop_mid_data_keeps_earlier_messages_sent(h: Harness) -> None:
    """On one connection, messages before the drop stay sent; the dropped one and those after go to the next host."""
    flaky = await h.net.mta("127.0.0.2")
    flaky.drop_rcpts.add("b@drop.test")
    good = await h.net.mta("127.0.0.3")
    h.net.mx("drop.test", (10, "mx1.drop.test", "127.0.0.2"), (20, "mx2.drop.test", "127.0.0.3"))
    ids = {rcpt: await h.queue([rcpt]) for rcpt in ("a@drop.test", "b@drop.test", "c@drop.test")}
    await h.run()
    assert [t.rcpt_tos for t in flaky.transactions] == [["a@drop.test"]]
    assert [t.rcpt_tos for t in good.transactions] == [["b@drop.test"], ["c@drop.test"]]
    mtas = {rcpt: (await h.recipients(eid))[rcpt]["remote_mta"] for rcpt, eid in ids.items()}
    assert mtas == {"a@drop.test": "mx1.drop.test", "b@drop.test": "mx2.drop.test", "c@drop.test": "mx2.drop.test"}


async def test_mx_host_whose_address_lookup_fails_is_skipped(h: Harness) -> None:
    """An MX host whose own A lookup fails (SERVFAIL) is skipped; the next MX host gets the mail."""
    backup = await h.net.mta("127.0.0.3")
    h.net.mx("half.test", (10, "mx1.half.test", "127.0.0.2"), (20, "mx2.half.test", "127.0.0.3"))
    h.net.zone.fail.add("mx1.half.test")
    eid = await h.queue(["someone@half.test"])
    await h.run()
    assert (await h.recipients(eid))["someone@half.test"]["remote_mta"] == "mx2.half.test"
    assert len(backup.transactions) == 1


async def test_no_mx_host_with_an_address_defers_4_4_3(h: Harness) -> None:
    """MX records whose hosts have no address at all: a DNS problem on their side, so the mail waits (4.4.3)."""
    h.net.zone.add("dangling.test", "MX", "10 mx1.dangling.test.")
    h.net.zone.add("mx1.dangling.test", "TXT", '"no address here"')
    eid = await h.queue(["someone@dangling.test"])
    await h.run()
    r = (await h.recipients(eid))["someone@dangling.test"]
    assert (r["status"], r["status_code"]) == ("deferred", "4.4.3")
