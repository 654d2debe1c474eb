"""SPF (RFC 7208) check_host() against a loopback DNS server: every result, the limits, macros."""

from __future__ import annotations

import ipaddress

import pytest

from relate.mailauth.spf import PermError, check_helo, check_host, check_mail_from, parse_record

from .conftest import Net

CLIENT = "192.0.2.10"


async def result(net: Net, record: str | None, *, client: str = CLIENT, domain: str = "remote.example") -> str:
    if record is not None:
        net.txt(domain, record)
    found, _ = await check_host(net.dns, ipaddress.ip_address(client), domain, f"carol@{domain}", "mx.remote.example")
    return found


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("v=spf1 ip4:192.0.2.0/24 -all", "pass"),
        ("v=spf1 ip4:198.51.100.1 -all", "fail"),
        ("v=spf1 ip4:198.51.100.1 ~all", "softfail"),
        ("v=spf1 ip4:198.51.100.1 ?all", "neutral"),
        ("v=spf1 ip4:198.51.100.1", "neutral"),
        ("v=spf1 +all", "pass"),
        ("V=SPF1 IP4:192.0.2.10 -ALL", "pass"),
        ("v=spf1 ip6:2001:db8::/32 -all", "fail"),
        ("v=spf1 foo:bar -all", "permerror"),
        ("v=spf1 ip4:192.0.2.10/33 -all", "permerror"),
        ("v=spf1 redirect=a.example redirect=b.example", "permerror"),
        ("v=spf1 exists:%{z}.example -all", "permerror"),
        ("v=spf1 -all unknown=whatever", "fail"),
        ("v=spf10 +all", "none"),
    ],
)
async def test_record_gives_result(net: Net, record: str, expected: str) -> None:
    """Each record gives the RFC 7208 result for a client at 192.0.2.10."""
    assert await result(net, record) == expected


async def test_no_record_is_none(net: Net) -> None:
    """A domain with no SPF record (or that does not exist) is none."""
    net.txt("remote.example", "some other text")
    assert await result(net, None) == "none"
    assert await result(net, None, domain="nowhere.example") == "none"


async def test_two_records_are_permerror(net: Net) -> None:
    """Two v=spf1 records at one name: permerror (§4.5)."""
    net.txt("remote.example", "v=spf1 +all")
    assert await result(net, "v=spf1 -all") == "permerror"


async def test_servfail_is_temperror(net: Net) -> None:
    """DNS trouble looking up the record is temperror."""
    net.zone.fail.add("remote.example")
    assert await result(net, None) == "temperror"


async def test_ipv6_client_and_ipv4_mapped(net: Net) -> None:
    """An IPv6 client matches ip6; an IPv4-mapped one is checked as IPv4."""
    net.txt("remote.example", "v=spf1 ip6:2001:db8::/32 ip4:192.0.2.0/24 -all")
    assert await result(net, None, client="2001:db8::5") == "pass"
    mapped = await check_mail_from(net.dns, "::ffff:192.0.2.10", "carol@remote.example", "x.example")
    assert mapped.result == "pass"


async def test_a_mx_include_exists_and_redirect_match(net: Net) -> None:
    """a, mx (with prefix lengths), include, exists and redirect each match by their rules."""
    net.zone.add("web.remote.example", "A", "192.0.2.10")
    net.zone.add("remote.example", "MX", "10 mx.remote.example.")
    net.zone.add("mx.remote.example", "A", "198.51.100.7")
    net.txt("a.example", "v=spf1 a:web.remote.example -all")
    net.txt("mx.example", "v=spf1 mx:remote.example/24 -all")
    net.txt("inc.example", "v=spf1 include:a.example -all")
    net.txt("ex.example", "v=spf1 exists:%{i}.ok.example -all")
    net.zone.add("192.0.2.10.ok.example", "A", "127.0.0.2")
    net.txt("red.example", "v=spf1 redirect=a.example")
    for domain in ("a.example", "inc.example", "ex.example", "red.example"):
        assert await result(net, None, domain=domain) == "pass", domain
    assert await result(net, None, domain="mx.example", client="198.51.100.200") == "pass"
    assert await result(net, None, domain="mx.example") == "fail"


async def test_include_of_domain_without_record_is_permerror(net: Net) -> None:
    """include: of a domain without SPF is permerror; redirect= to one is permerror too (§5.2, §6.1)."""
    net.zone.add("norecord.example", "A", "192.0.2.1")
    assert await result(net, "v=spf1 include:norecord.example -all") == "permerror"
    assert await result(net, "v=spf1 redirect=norecord.example", domain="other.example") == "permerror"


async def test_include_fail_does_not_match(net: Net) -> None:
    """An include whose record fails is no match: evaluation goes on to the next term."""
    net.txt("strict.example", "v=spf1 -all")
    assert await result(net, "v=spf1 include:strict.example ip4:192.0.2.10 -all") == "pass"


async def test_ten_dns_terms_pass_and_eleven_are_permerror(net: Net) -> None:
    """§4.6.4: ten DNS-querying terms are evaluated; the eleventh makes the result permerror."""
    for i in range(11):
        net.zone.add(f"h{i}.remote.example", "A", f"198.51.100.{i + 1}")
    ten = " ".join(f"a:h{i}.remote.example" for i in range(10))
    assert await result(net, f"v=spf1 {ten} ip4:192.0.2.10 -all") == "pass"
    eleven = " ".join(f"a:h{i}.remote.example" for i in range(11))
    assert await result(net, f"v=spf1 {eleven} ip4:192.0.2.10 -all", domain="eleven.example") == "permerror"


async def test_lookups_count_across_includes(net: Net) -> None:
    """Includes count, and the terms inside them count towards the same ten."""
    for i in range(6):
        net.zone.add(f"h{i}.remote.example", "A", f"198.51.100.{i + 1}")
    six = " ".join(f"a:h{i}.remote.example" for i in range(6))
    net.txt("inner.example", f"v=spf1 {six} ?all")
    # 2 includes + 2 x 6 a: = 14 > 10
    record = "v=spf1 include:inner.example include:inner.example ip4:192.0.2.10 -all"
    assert await result(net, record) == "permerror"


async def test_two_void_lookups_pass_and_three_are_permerror(net: Net) -> None:
    """§4.6.4: two void lookups (NXDOMAIN or no records) are allowed; the third is permerror."""
    two = "a:nx1.remote.example exists:nx2.remote.example"
    assert await result(net, f"v=spf1 {two} ip4:192.0.2.10 -all") == "pass"
    three = two + " mx:nx3.remote.example"
    assert await result(net, f"v=spf1 {three} ip4:192.0.2.10 -all", domain="three.example") == "permerror"


async def test_more_than_ten_mx_names_is_permerror(net: Net) -> None:
    """An mx mechanism whose domain has eleven MX records is permerror."""
    for i in range(11):
        net.zone.add("many.example", "MX", f"{i} mx{i}.many.example.")
    assert await result(net, "v=spf1 mx:many.example -all") == "permerror"


async def test_macros_expand(net: Net) -> None:
    """%{l}, %{o}, %{d2}, %{ir}, %{v} and %{h} expand per §7 (sender carol@m.example, HELO mx.remote.example)."""
    net.txt("m.example", "v=spf1 exists:%{l}.%{o}.%{d2}.%{ir}.%{v}._spf.%{h} -all")
    name = "carol.m.example.m.example.10.2.0.192.in-addr._spf.mx.remote.example"
    net.zone.add(name, "A", "127.0.0.2")
    assert await result(net, None, domain="m.example") == "pass"
    assert (name, "A") in net.queries


async def test_ptr_matches_a_validated_name(net: Net) -> None:
    """ptr: the client's PTR name, confirmed by its A record, under the domain."""
    net.zone.add("10.2.0.192.in-addr.arpa", "PTR", "host.remote.example.")
    net.zone.add("host.remote.example", "A", "192.0.2.10")
    assert await result(net, "v=spf1 ptr -all") == "pass"
    assert await result(net, None, client="192.0.2.11") == "fail"


async def test_helo_identity(net: Net) -> None:
    """The HELO check uses the HELO name's record; an address literal is none; null MAIL FROM uses HELO."""
    net.txt("mx.remote.example", "v=spf1 ip4:192.0.2.10 -all")
    assert (await check_helo(net.dns, CLIENT, "mx.remote.example")).result == "pass"
    assert (await check_helo(net.dns, CLIENT, "[192.0.2.10]")).result == "none"
    bounce = await check_mail_from(net.dns, CLIENT, "", "mx.remote.example")
    assert (bounce.result, bounce.sender) == ("pass", "postmaster@mx.remote.example")


def test_parse_rejects_bad_syntax() -> None:
    """The whole record is checked before any of it runs: a bad term anywhere is PermError."""
    for record in ("v=spf1 a:example.com/", "v=spf1 ip4:300.1.1.1", "v=spf1 all:x", "v=spf1 exists", "v=spf1 a:%"):
        with pytest.raises(PermError):
            parse_record(record)
