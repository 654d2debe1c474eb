"""The client's address behind proxies: which header, which hop, and what a client cannot forge."""

from __future__ import annotations

import pytest

from relate.api.forwarded import MAX_HOPS, client_address, parse_address, parse_networks
from relate.config import ConfigError, from_mapping

PROXIES = parse_networks(["127.0.0.1", "10.0.0.0/8", "2001:db8:ffff::/48"])


def xff(peer: str, *lines: str) -> str:
    return client_address(peer, list(lines), header="x-forwarded-for", trusted=PROXIES)


def fwd(peer: str, *lines: str) -> str:
    return client_address(peer, list(lines), header="forwarded", trusted=PROXIES)


def test_untrusted_peer_is_the_client_whatever_it_claims() -> None:
    """A peer not in api.trusted_proxies is the client: its X-Forwarded-For and Forwarded are ignored."""
    assert xff("192.0.2.50", "198.51.100.1") == "192.0.2.50"
    assert fwd("192.0.2.50", "for=198.51.100.1") == "192.0.2.50"
    assert client_address("127.0.0.1", ["198.51.100.1"], header="x-forwarded-for", trusted=[]) == "127.0.0.1"


def test_right_most_untrusted_hop_is_the_client() -> None:
    """Trusted hops are skipped from the right; what a client put on the left (a forged address) is not reached."""
    assert xff("127.0.0.1", "198.51.100.7") == "198.51.100.7"
    assert xff("127.0.0.1", "6.6.6.6, 198.51.100.7") == "198.51.100.7"
    assert xff("127.0.0.1", "6.6.6.6, 198.51.100.7, 10.1.2.3") == "198.51.100.7"
    # HAProxy adds a header line per hop; nginx appends to the one line.
    assert xff("127.0.0.1", "6.6.6.6", "198.51.100.7", "10.1.2.3") == "198.51.100.7"
    assert xff("127.0.0.1", "198.51.100.7:51234") == "198.51.100.7"
    assert xff("127.0.0.1", "[2001:db8::7]:443") == "2001:db8::7"
    assert xff("127.0.0.1", " 2001:db8::7 ") == "2001:db8::7"


def test_forwarded_header_rfc_7239() -> None:
    """Forwarded: for= tokens and quoted strings (IPv6 in brackets, ports), other parameters and elements."""
    assert fwd("127.0.0.1", "for=192.0.2.60;proto=http;by=203.0.113.43") == "192.0.2.60"
    assert fwd("127.0.0.1", 'for="[2001:db8:cafe::17]:4711"') == "2001:db8:cafe::17"
    assert fwd("127.0.0.1", "For=192.0.2.43, for=198.51.100.17") == "198.51.100.17"
    assert fwd("127.0.0.1", "for=192.0.2.43, for=198.51.100.17;by=10.0.0.1, for=10.9.9.9") == "198.51.100.17"


def test_client_written_quotes_and_commas_cannot_hide_the_proxys_entry() -> None:
    """An unclosed quote or a quoted comma of the client's own, left of the proxy's entry, changes nothing."""
    assert fwd("127.0.0.1", 'for="6.6.6.6, for=198.51.100.9') == "198.51.100.9"
    assert fwd("127.0.0.1", 'for="a,\\",b", for=198.51.100.9') == "198.51.100.9"
    assert fwd("127.0.0.1", 'for=x"y, for=198.51.100.9') == "198.51.100.9"


def test_a_hop_that_is_no_address_stops_at_the_proxy_that_wrote_it() -> None:
    """'unknown', obfuscated names and junk leave the client at the trusted hop that reported them."""
    assert fwd("127.0.0.1", "for=unknown") == "127.0.0.1"
    assert fwd("127.0.0.1", "for=_hidden, for=10.0.0.5") == "10.0.0.5"
    assert fwd("127.0.0.1", "proto=https") == "127.0.0.1"
    assert xff("127.0.0.1", "not-an-address") == "127.0.0.1"
    assert xff("127.0.0.1", "") == "127.0.0.1"
    assert xff("127.0.0.1", "198.51.100.7,,10.0.0.1") == "10.0.0.1"


def test_every_hop_trusted_gives_the_left_most() -> None:
    """A client inside the trusted networks is itself: the left-most hop."""
    assert xff("127.0.0.1", "10.0.0.9, 10.0.0.8") == "10.0.0.9"


def test_at_most_max_hops_are_read() -> None:
    """A chain of more trusted hops than MAX_HOPS stops there: the rest of the header is never parsed."""
    chain = ", ".join(["198.51.100.1"] + ["10.0.0.1"] * (MAX_HOPS + 5))
    assert xff("127.0.0.1", chain) == "10.0.0.1"
    assert xff("127.0.0.1", ", ".join(["198.51.100.1"] + ["10.0.0.1"] * (MAX_HOPS - 1))) == "198.51.100.1"


def test_addresses_have_one_spelling() -> None:
    """IPv4-mapped IPv6 is written as IPv4, IPv6 compressed; a Unix socket peer is 'local'."""
    assert xff("::ffff:127.0.0.1", "::ffff:198.51.100.7") == "198.51.100.7"
    assert xff("127.0.0.1", "2001:DB8:0:0::7") == "2001:db8::7"
    assert client_address(None, ["198.51.100.7"], header="x-forwarded-for", trusted=PROXIES) == "local"
    assert parse_address("[2001:db8::1]x") is None
    assert parse_address("1" * 200) is None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"api": {"trusted_proxies": ["10.0.0.0/8", "proxy.example"]}}, "api.trusted_proxies[1]: not an IP"),
        ({"api": {"proxy_header": "X-Real-IP"}}, "api.proxy_header: must be X-Forwarded-For or Forwarded"),
    ],
)
def test_bad_proxy_settings_stop_start_up(data: dict[str, object], problem: str) -> None:
    """A trusted proxy that is no address or network, or an unknown header, is a configuration error."""
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        from_mapping(data, "test", environ={})
