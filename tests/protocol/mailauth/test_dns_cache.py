"""The checks' DNS answers are kept for their TTL (void ones for their SOA's negative TTL), never past it,
and a temporary failure is never kept: what a sender's domain publishes counts again once its TTL is up."""

from __future__ import annotations

import pytest

from relate.mailauth import dns as authdns
from relate.mailauth.dns import TempError
from relate.mailauth.spf import check_mail_from

from .conftest import Net


async def test_a_warm_answer_asks_no_server_and_an_expired_one_asks_again(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(net.dns, "_answers", authdns._Answers(clock=lambda: now[0]))
    net.txt("sender.example", "v=spf1 -all")
    assert await net.dns.txt("sender.example") == ["v=spf1 -all"]
    assert await net.dns.txt("Sender.Example.") == ["v=spf1 -all"]  # one name, however spelt
    assert net.queries.count(("sender.example", "TXT")) == 1
    net.zone.records[("sender.example", "TXT")] = ['"v=spf1 +all"']
    now[0] += 61  # the loopback server's records have a TTL of 60 s
    assert await net.dns.txt("sender.example") == ["v=spf1 +all"]
    assert net.queries.count(("sender.example", "TXT")) == 2


async def test_a_void_answer_is_kept_for_the_soa_negative_ttl_only(net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(net.dns, "_answers", authdns._Answers(clock=lambda: now[0]))
    net.zone.negative_ttl = 30
    assert await net.dns.txt("_dmarc.nothing.example") is None  # NXDOMAIN
    assert await net.dns.txt("_dmarc.nothing.example") is None
    assert net.queries.count(("_dmarc.nothing.example", "TXT")) == 1
    now[0] += 31
    net.txt("_dmarc.nothing.example", "v=DMARC1; p=reject")
    assert await net.dns.txt("_dmarc.nothing.example") == ["v=DMARC1; p=reject"]


async def test_without_an_soa_a_void_answer_is_not_kept(net: Net) -> None:
    assert await net.dns.mx("later.example") is None
    net.zone.add("later.example", "MX", "10 mx.later.example.")
    assert await net.dns.mx("later.example") == ["mx.later.example"]


async def test_a_server_failure_is_not_kept(net: Net) -> None:
    net.zone.fail.add("flaky.example")
    with pytest.raises(TempError):
        await net.dns.txt("flaky.example")
    net.zone.fail.discard("flaky.example")
    net.txt("flaky.example", "v=spf1 -all")
    assert await net.dns.txt("flaky.example") == ["v=spf1 -all"]


def test_the_cache_is_bounded() -> None:
    answers = authdns._Answers(entries=3, clock=lambda: 0.0)
    for i in range(5):
        answers.put((f"n{i}.example", "TXT"), [str(i)], 60)
    assert [answers.get((f"n{i}.example", "TXT"))[0] for i in range(5)] == [False, False, True, True, True]


def test_the_resolver_given_keeps_its_own_cache() -> None:
    """The daemon's resolver (the delivery daemon's MX lookups share it with MTA-STS's checks) keeps its cache."""
    from relate.config import DeliveryConfig
    from relate.runtime.resolver import make_resolver

    resolver = make_resolver(DeliveryConfig(dns_servers=["127.0.0.1:9"]))
    checks = authdns.Dns(resolver)
    assert resolver.cache is not None
    assert checks.resolver is not resolver
    assert checks.resolver.cache is None


async def test_an_spf_result_follows_the_shortest_ttl_of_the_answers_it_used(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SPF result given again from the cache changes as soon as any answer it was made of (an include's,
    kept for less time than the sender's own record) expires and says otherwise."""
    now = [1000.0]
    answers = authdns._Answers(clock=lambda: now[0])
    monkeypatch.setattr(net.dns, "_answers", answers)
    answers.put(("sender.example", "TXT"), ["v=spf1 include:relay.example -all"], 3600)
    answers.put(("relay.example", "TXT"), ["v=spf1 ip4:192.0.2.10 -all"], 60)
    for _ in range(2):
        assert (await check_mail_from(net.dns, "192.0.2.10", "bob@sender.example", "h.example")).result == "pass"
    net.txt("relay.example", "v=spf1 ip4:198.51.100.1 -all")  # what the relay publishes once its TTL is up
    now[0] += 61
    found = await check_mail_from(net.dns, "192.0.2.10", "bob@sender.example", "h.example")
    assert found.result == "fail"
    assert net.queries == [("relay.example", "TXT")]  # the sender's own record was still kept


async def test_an_spf_result_is_its_inputs_own(net: Net) -> None:
    """A result kept for one sender, client and HELO name is never given for another: a macro of the local
    part (exists:%{l}.…) decides per sender."""
    net.txt("sender.example", "v=spf1 exists:%{l}.allowed.sender.example -all")
    net.zone.add("bob.allowed.sender.example", "A", "127.0.0.2")
    assert (await check_mail_from(net.dns, "192.0.2.10", "bob@sender.example", "h.example")).result == "pass"
    assert (await check_mail_from(net.dns, "192.0.2.10", "eve@sender.example", "h.example")).result == "fail"
    assert (await check_mail_from(net.dns, "192.0.2.10", "bob@sender.example", "h.example")).result == "pass"


async def test_an_spf_result_that_met_dns_trouble_is_evaluated_again(net: Net) -> None:
    """A temperror (an include's server failing), and a result made while a ptr lookup failed (which counts as
    no match), are not kept: once DNS answers again, the sender's mail gets the result its records give."""
    net.txt("sender.example", "v=spf1 include:relay.example -all")
    net.txt("relay.example", "v=spf1 ip4:192.0.2.10 -all")
    net.zone.fail.add("relay.example")
    assert (await check_mail_from(net.dns, "192.0.2.10", "bob@sender.example", "h.example")).result == "temperror"
    net.zone.fail.discard("relay.example")
    assert (await check_mail_from(net.dns, "192.0.2.10", "bob@sender.example", "h.example")).result == "pass"

    net.txt("ptr.example", "v=spf1 ptr -all")
    net.zone.fail.add("10.2.0.192.in-addr.arpa")
    assert (await check_mail_from(net.dns, "192.0.2.10", "bob@ptr.example", "h.example")).result == "fail"
    net.zone.fail.discard("10.2.0.192.in-addr.arpa")
    net.zone.add("10.2.0.192.in-addr.arpa", "PTR", "mail.ptr.example.")
    net.zone.add("mail.ptr.example", "A", "192.0.2.10")
    assert (await check_mail_from(net.dns, "192.0.2.10", "bob@ptr.example", "h.example")).result == "pass"
